//! Event ids: UUIDs v4 from a pool of OS randomness, one `getrandom` call per 256 events
//! rather than one per event (the hot path's last syscall but the write).
//!
//! Built after the fork, in the worker, so no two workers ever share a pool.

use std::cell::RefCell;

use uuid::Uuid;

pub struct EventIds {
    pool: RefCell<([u8; 4096], usize)>,
}

impl EventIds {
    pub fn new() -> EventIds {
        EventIds {
            pool: RefCell::new(([0; 4096], 4096)),
        }
    }

    pub fn next(&self) -> Uuid {
        let mut pool = self.pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used + 16 > bytes.len() {
            if !fill_random(bytes) {
                return Uuid::new_v4();
            }
            *used = 0;
        }
        let mut random = [0u8; 16];
        random.copy_from_slice(&bytes[*used..*used + 16]);
        *used += 16;
        uuid::Builder::from_random_bytes(random).into_uuid()
    }
}

/// Fills `buffer` from the kernel's CSPRNG; false if it cannot (the caller falls back).
fn fill_random(buffer: &mut [u8]) -> bool {
    let mut filled = 0;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match n {
            n if n > 0 => filled += n as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_and_do_not_repeat_across_refills() {
        let ids = EventIds::new();
        let drawn: std::collections::HashSet<Uuid> = (0..1000).map(|_| ids.next()).collect();
        assert_eq!(drawn.len(), 1000);
        assert!(drawn.iter().all(|id| id.get_version_num() == 4));
    }
}
