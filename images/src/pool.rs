//! Recycled chunk buffers. Every MiB of the stream used to be a fresh allocation, which the
//! kernel must fault in and zero page by page — measurably more work than the copy itself.
//! Buffers return to the pool when the last `Bytes` pointing into them is dropped.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A pool of equally sized byte buffers, shared by the threads of one write.
#[derive(Debug, Clone)]
pub(crate) struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
    keep: usize,
}

impl BufferPool {
    /// Buffers of `capacity` bytes; at most `keep` idle ones are kept.
    pub(crate) fn new(capacity: usize, keep: usize) -> Self {
        Self {
            free: Arc::new(Mutex::new(Vec::with_capacity(keep))),
            capacity,
            keep,
        }
    }

    /// An empty buffer with at least the pool's capacity.
    pub(crate) fn take(&self) -> Vec<u8> {
        let recycled = self.free.lock().ok().and_then(|mut free| free.pop());
        match recycled {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(self.capacity),
        }
    }

    /// Shares `buf` as `Bytes`; it comes back to the pool when the last clone is dropped.
    pub(crate) fn freeze(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() < self.capacity {
            return;
        }
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.keep
        {
            free.push(buf);
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_clone_drops() {
        let pool = BufferPool::new(1024, 2);
        let mut buf = pool.take();
        buf.extend_from_slice(b"hello");
        let address = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let slice = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.free.lock().unwrap().len(), 0, "a slice still holds it");
        assert_eq!(&slice[..], b"el");
        drop(slice);
        let again = pool.take();
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
    }
}
