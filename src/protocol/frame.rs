//! The one frame format of every channel between the master and its children: a 4-byte
//! little-endian length followed by that many bytes of bincode 2 (standard
//! configuration). Both ends of every channel decode with `take_frame`, or `take_frames`
//! where one read carries many (count streams), so there is one codec; `Json` is the one wrapper for a value bincode cannot carry (a document with
//! free-form JSON in it), sent as its JSON text inside the frame.
//!
//! Plain data: no I/O.

use std::io::{self, ErrorKind};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bigger frames are refused: a peer that announces one is broken or hostile.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

const LENGTH_BYTES: usize = 4;

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
    let Some((message, used)) = decode_front(buffer)? else {
        return Ok(None);
    };
    buffer.drain(..used);
    Ok(Some(message))
}

/// Removes every complete frame from `buffer` and decodes them, in order. The buffer is
/// cut once, not once a frame: a read of megabytes of small frames (a worker's count
/// batches) otherwise moves the rest of the buffer for each of them, quadratic in the
/// read (hundreds of milliseconds of a master that answers nothing meanwhile).
pub fn take_frames<M: DeserializeOwned>(buffer: &mut Vec<u8>) -> io::Result<Vec<M>> {
    let mut messages = Vec::new();
    let mut used = 0;
    while let Some((message, length)) = decode_front(&buffer[used..])? {
        messages.push(message);
        used += length;
    }
    buffer.drain(..used);
    Ok(messages)
}

/// The frame at the front of `bytes`, decoded, and the bytes it took; `None` when they
/// do not hold a whole frame yet.
fn decode_front<M: DeserializeOwned>(bytes: &[u8]) -> io::Result<Option<(M, usize)>> {
    let Some(header) = bytes.get(..LENGTH_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    let Some(payload) = bytes.get(LENGTH_BYTES..LENGTH_BYTES + length) else {
        return Ok(None);
    };
    let (message, used) =
        bincode::serde::decode_from_slice(payload, bincode::config::standard())
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("bad frame: {e}")))?;
    if used != length {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "frame has trailing bytes",
        ));
    }
    Ok(Some((message, LENGTH_BYTES + length)))
}

/// A value that travels as its JSON text: for messages holding free-form JSON (a job's
/// action and key), which bincode, not self-describing, cannot decode. A text that does
/// not decode fails its whole frame, like any other malformed frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Stamp;
    use crate::protocol::worker::{Deltas, Heartbeat, MasterMessage, WorkerMessage};

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
    fn frames_taken_at_once_leave_a_partial_one_for_later() {
        let mut wire = Vec::new();
        for _ in 0..1000 {
            wire.extend(encode(&WorkerMessage::Ready).unwrap());
        }
        let stop = encode(&MasterMessage::Stop).unwrap();
        let mut buffer = wire.clone();
        buffer.extend_from_slice(&stop[..2]);
        let decoded = take_frames::<WorkerMessage>(&mut buffer).unwrap();
        assert_eq!(decoded, vec![WorkerMessage::Ready; 1000]);
        assert_eq!(buffer, stop[..2]);
        buffer.extend_from_slice(&stop[2..]);
        let rest = take_frames::<MasterMessage>(&mut buffer).unwrap();
        assert_eq!(rest, vec![MasterMessage::Stop]);
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
}
