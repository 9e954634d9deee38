//! IPC between the master and its workers: the messages, and the frame format that carries
//! them over each worker's Unix socketpairs: one for the messages below, both ways, and
//! one that carries only the worker's `CountBatch`es (watcher counts, at least every
//! 10 ms while events come, and before it exits), which the master may read late.
//!
//! A frame is a 4-byte little-endian length followed by that many bytes of bincode 2
//! (standard configuration). Both ends decode with `take_frame`, so there is one codec.
//! The master side (`Channel`) is non-blocking and buffers what it could not write yet:
//! the master never blocks on a worker. The worker side lives in `worker::link`.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{MsgFlags, recv};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Stamp;
use crate::metrics::Deltas;
use crate::registry::{Change, Origin, Refusal};

/// Bigger frames are refused: a peer that announces one is broken or hostile.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

const LENGTH_BYTES: usize = 4;

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// Set up and accepting connections.
    Ready,
    /// Sent at least once a second; its absence for `heartbeat_timeout_secs` means hung.
    Heartbeat(Heartbeat),
    /// The worker stops on its own (`max_requests` reached) and drains: replace it.
    Retiring { reason: String },
    /// Set-up failed (privileges, runtime): the reason, sent just before exiting.
    StartupFailed { reason: String },
    /// A question the master answers with `MasterMessage::Answer` and the same `id`,
    /// if it reads it before `deadline`; past it, the worker has given up (503) and the
    /// master drops it unapplied.
    Ask {
        id: u64,
        deadline: Stamp,
        question: Question,
    },
    /// The worker now serves this registry version.
    RegistryAck { version: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Question {
    /// Validate, apply, persist and spread a registry change.
    Change { change: Change, origin: Origin },
    /// The Prometheus exposition of the whole daemon.
    Metrics,
    /// Silences, the alert list, a watcher's live state (alerts.md).
    OnCall(crate::oncall::Request),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The id of what was created (nil for a deletion), or why the change was refused.
    Change(Result<Uuid, Refusal>),
    Metrics(String),
    OnCall(crate::oncall::Reply),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Connections were open for more than half of the last heartbeat interval.
    pub busy: bool,
    pub requests: u64,
    pub in_flight: u32,
    pub connections: u32,
    pub rss_bytes: u64,
    /// Counters since the previous heartbeat, added up by the master.
    pub deltas: Deltas,
    /// When the worker wrote it: its age is judged from this, not from when the master
    /// read it.
    pub sent_at: Stamp,
}

/// What the master tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterMessage {
    /// Stop accepting, finish in-flight requests, flush, exit.
    Stop,
    /// Reopen log files and file appenders (SIGUSR1 reached the master).
    ReopenLogs,
    /// A new registry, as the JSON document of `registry.json`.
    Registry {
        document: String,
    },
    /// A registry change applied before its deadline: the worker waits for the `Answer`
    /// (sent once every worker serves the change) however long that takes, and, should
    /// the master go away first, replies with this one: the change is persisted.
    Applied {
        id: u64,
        answer: Answer,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
}

/// Encodes one message as a frame.
pub fn encode<M: Serialize>(message: &M) -> io::Result<Vec<u8>> {
    let mut frame = vec![0; LENGTH_BYTES];
    bincode::serde::encode_into_std_write(message, &mut frame, bincode::config::standard())
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("cannot encode: {e}")))?;
    let length = u32::try_from(frame.len() - LENGTH_BYTES)
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME_BYTES)
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "message too large for a frame"))?;
    frame[..LENGTH_BYTES].copy_from_slice(&length.to_le_bytes());
    Ok(frame)
}

/// Removes the first complete frame from `buffer` and decodes it; `None` when the
/// buffer does not hold a whole frame yet.
pub fn take_frame<M: DeserializeOwned>(buffer: &mut Vec<u8>) -> io::Result<Option<M>> {
    let Some(header) = buffer.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    if buffer.len() < LENGTH_BYTES + length {
        return Ok(None);
    }
    let payload = &buffer[LENGTH_BYTES..LENGTH_BYTES + length];
    let (message, used) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("bad frame: {e}")))?;
    if used != length {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "frame has trailing bytes",
        ));
    }
    buffer.drain(..LENGTH_BYTES + length);
    Ok(Some(message))
}

/// The master's end of one worker's socketpair.
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
    /// The peer closed its end (the worker exited).
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
        let mut closed = false;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.inbound.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        let mut messages = Vec::new();
        while let Some(message) = take_frame(&mut self.inbound)? {
            messages.push(message);
        }
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
    use super::*;

    #[test]
    fn frames_round_trip_one_byte_at_a_time() {
        let heartbeat = WorkerMessage::Heartbeat(Heartbeat {
            busy: true,
            requests: 7,
            in_flight: 1,
            connections: 3,
            rss_bytes: 4096,
            deltas: Deltas::default(),
            sent_at: Stamp::now(),
        });
        let mut wire = encode(&heartbeat).unwrap();
        wire.extend(encode(&WorkerMessage::Ready).unwrap());
        let mut buffer = Vec::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buffer.push(byte);
            while let Some(message) = take_frame::<WorkerMessage>(&mut buffer).unwrap() {
                decoded.push(message);
            }
        }
        assert_eq!(decoded, vec![heartbeat, WorkerMessage::Ready]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_before_it_is_buffered() {
        let mut buffer = u32::MAX.to_le_bytes().to_vec();
        let error = take_frame::<WorkerMessage>(&mut buffer).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn garbage_frame_is_an_error_not_a_panic() {
        let mut buffer = vec![3, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(take_frame::<MasterMessage>(&mut buffer).is_err());
    }

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
}
