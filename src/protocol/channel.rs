//! The master's end of a child's socketpair: non-blocking, buffering what it could not
//! write yet, so that the master never blocks on a child. Frames as `frame` says; the
//! children's ends (blocking, or on their runtime) live with them.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{MsgFlags, recv};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::frame::{encode, take_frames};

/// The master's end of one child's socketpair.
pub struct Channel {
    stream: UnixStream,
    inbound: Vec<u8>,
    outbound: Vec<u8>,
    /// Bytes of `outbound` already written. Cut off once everything is written or a
    /// message is queued, not after every write: a 16 MiB registry goes out in hundreds
    /// of writes, and moving the rest after each one made its push quadratic.
    written: usize,
}

/// What one read from a channel gave.
pub struct Received<M> {
    pub messages: Vec<M>,
    /// The peer closed its end (the child exited).
    pub closed: bool,
}

impl Channel {
    pub fn new(stream: UnixStream) -> io::Result<Channel> {
        stream.set_nonblocking(true)?;
        Ok(Channel {
            stream,
            inbound: Vec::new(),
            outbound: Vec::new(),
            written: 0,
        })
    }

    /// Queues a message and writes as much as the socket takes now.
    pub fn send<M: Serialize>(&mut self, message: &M) -> io::Result<()> {
        let frame = encode(message)?;
        self.outbound.drain(..self.written);
        self.written = 0;
        if self.outbound.is_empty() {
            self.outbound = frame;
        } else {
            self.outbound.extend_from_slice(&frame);
        }
        self.flush()
    }

    /// Writes queued bytes until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wants_write() {
            match self.stream.write(&self.outbound[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if !self.wants_write() {
            self.outbound.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Whether the peer wrote bytes that the master has not read yet.
    pub fn has_unread(&self) -> bool {
        let mut byte = [0u8; 1];
        let peeked = recv(
            self.stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        );
        matches!(peeked, Ok(n) if n > 0)
    }

    pub fn wants_write(&self) -> bool {
        self.written < self.outbound.len()
    }

    /// Bytes queued that the peer has not taken yet.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.len() - self.written
    }

    /// What the master does when poll reports the channel ready: write what waits if it
    /// became writable, then read what arrived.
    pub fn exchange<M: DeserializeOwned>(&mut self, writable: bool) -> io::Result<Received<M>> {
        if writable {
            self.flush()?;
        }
        self.receive()
    }

    /// Reads everything available and decodes the complete frames.
    pub fn receive<M: DeserializeOwned>(&mut self) -> io::Result<Received<M>> {
        self.receive_at_most(usize::MAX)
    }

    /// Reads what is available, up to about `bytes` (whole reads of 16 KiB, at least
    /// one), and decodes the complete frames. The rest stays in the socket, where the
    /// peer's writes wait for it: for a channel the master reads only while it has room
    /// for what comes (a worker's counts), an unbounded read would take in everything
    /// the peer can write meanwhile.
    pub fn receive_at_most<M: DeserializeOwned>(
        &mut self,
        bytes: usize,
    ) -> io::Result<Received<M>> {
        let mut closed = false;
        let mut chunk = [0u8; 16 * 1024];
        let mut read = 0;
        while read < bytes {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    self.inbound.extend_from_slice(&chunk[..n]);
                    read += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let messages = take_frames(&mut self.inbound)?;
        Ok(Received { messages, closed })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::protocol::frame::{encode, take_frame};
    use crate::protocol::worker::{MasterMessage, WorkerMessage};

    #[test]
    fn channel_delivers_to_a_socketpair_peer() {
        let (master_end, mut worker_end) = UnixStream::pair().unwrap();
        let mut channel = Channel::new(master_end).unwrap();
        channel.send(&MasterMessage::Stop).unwrap();
        let mut buffer = vec![0u8; 64];
        let n = worker_end.read(&mut buffer).unwrap();
        buffer.truncate(n);
        assert_eq!(take_frame(&mut buffer).unwrap(), Some(MasterMessage::Stop));

        worker_end
            .write_all(&encode(&WorkerMessage::Ready).unwrap())
            .unwrap();
        drop(worker_end);
        let received = channel.receive::<WorkerMessage>().unwrap();
        assert_eq!(received.messages, vec![WorkerMessage::Ready]);
        assert!(received.closed);
    }

    #[test]
    fn a_bounded_read_leaves_the_rest_in_the_socket() {
        let (master_end, mut worker_end) = UnixStream::pair().unwrap();
        let mut channel = Channel::new(master_end).unwrap();
        let ready = encode(&WorkerMessage::Ready).unwrap();
        let frames = 64 * 1024 / ready.len();
        worker_end.write_all(&ready.repeat(frames)).unwrap();
        let first = channel.receive_at_most::<WorkerMessage>(1).unwrap();
        assert!(!first.messages.is_empty() && first.messages.len() < frames);
        assert!(channel.has_unread());
        let rest = channel.receive::<WorkerMessage>().unwrap();
        assert_eq!(first.messages.len() + rest.messages.len(), frames);
    }
}
