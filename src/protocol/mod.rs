//! Every channel between the master and its children, typed in one place: one frame
//! format (`frame`), the master's non-blocking end of a channel (`channel`), and the
//! messages of each role: a worker (`worker`, with its on-call questions in `oncall`),
//! the action runner (`runner`), the cluster link (`cluster`). A snapshot child and a
//! successor say nothing on their channel.
//!
//! Both ends of a channel import its messages from here, never from each other: this
//! module sits below every process role, and imports none of them.

pub mod channel;
pub mod cluster;
pub mod frame;
pub mod oncall;
pub mod runner;
pub mod worker;
