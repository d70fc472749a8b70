//! Deterministic test data that is generated on demand instead of held in memory: a
//! seeded, block-addressable byte stream (any range can be regenerated without the bytes
//! before it), an `AsyncRead` over it, and an `AsyncWrite` sink that hashes and counts
//! what it receives.

use std::pin::Pin;
use std::task::{Context, Poll};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use trove_types::Sha256;

/// Bytes per independently seeded block.
const BLOCK: u64 = 64 * 1024;

/// A random seed for a test, printed so that a failure can be reproduced with
/// `TROVE_TEST_SEED=<seed>`.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("TROVE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (rerun with TROVE_TEST_SEED={seed})");
    seed
}

/// `size` pseudo-random bytes determined by `seed`.
#[derive(Clone, Copy, Debug)]
pub struct DataGen {
    pub seed: u64,
    pub size: u64,
}

impl DataGen {
    pub fn new(seed: u64, size: u64) -> Self {
        DataGen { seed, size }
    }

    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    pub fn fill_at(&self, offset: u64, buf: &mut [u8]) {
        assert!(offset + buf.len() as u64 <= self.size, "read past the end");
        let mut done = 0usize;
        let mut block_bytes = vec![0u8; BLOCK as usize];
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            self.block(block, &mut block_bytes);
            let n = (BLOCK as usize - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block_bytes[within..within + n]);
            done += n;
        }
    }

    fn block(&self, index: u64, out: &mut [u8]) {
        let mut rng =
            SmallRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.fill_bytes(out);
    }

    /// The bytes at `start..end` (for small ranges).
    pub fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        let mut v = vec![0u8; (end - start) as usize];
        self.fill_at(start, &mut v);
        v
    }

    /// The whole content (for small objects only).
    pub fn bytes(&self) -> Vec<u8> {
        self.slice(0, self.size)
    }

    /// SHA-256 of the whole content, computed block by block.
    pub fn sha256(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut block = vec![0u8; BLOCK as usize];
        let mut off = 0;
        while off < self.size {
            let n = BLOCK.min(self.size - off) as usize;
            self.fill_at(off, &mut block[..n]);
            h.update(&block[..n]);
            off += n as u64;
        }
        h.finalize()
    }

    /// A reader that yields the content in order.
    pub fn reader(&self) -> GenReader {
        GenReader {
            data: *self,
            offset: 0,
            block: vec![0u8; BLOCK as usize],
            block_index: None,
        }
    }
}

/// `AsyncRead` over a [`DataGen`]; holds one block, never the whole content.
pub struct GenReader {
    data: DataGen,
    offset: u64,
    block: Vec<u8>,
    block_index: Option<u64>,
}

impl AsyncRead for GenReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.offset >= this.data.size {
            return Poll::Ready(Ok(()));
        }
        let index = this.offset / BLOCK;
        if this.block_index != Some(index) {
            this.data.block(index, &mut this.block);
            this.block_index = Some(index);
        }
        let within = (this.offset % BLOCK) as usize;
        let block_len = (this.data.size - index * BLOCK).min(BLOCK) as usize;
        let n = (block_len - within).min(buf.remaining());
        buf.put_slice(&this.block[within..within + n]);
        this.offset += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// `AsyncWrite` that hashes and counts everything written to it.
#[derive(Default)]
pub struct HashSink {
    hasher: Sha256,
    pub len: u64,
}

impl HashSink {
    pub fn new() -> Self {
        HashSink::default()
    }

    /// SHA-256 of everything written so far.
    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize()
    }
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_the_whole() {
        let g = DataGen::new(7, 3 * BLOCK + 123);
        let all = g.bytes();
        assert_eq!(
            g.slice(BLOCK - 5, 2 * BLOCK + 9),
            all[(BLOCK - 5) as usize..(2 * BLOCK + 9) as usize]
        );
        let whole: [u8; 32] = Sha256::digest(&all);
        assert_eq!(g.sha256(), whole);
        assert_ne!(DataGen::new(8, 100).bytes(), DataGen::new(7, 100).bytes());
    }

    #[tokio::test]
    async fn reader_yields_the_content() {
        let g = DataGen::new(9, 2 * BLOCK + 77);
        let mut sink = HashSink::new();
        tokio::io::copy(&mut g.reader(), &mut sink)
            .await
            .expect("copy");
        assert_eq!(sink.len, g.size);
        assert_eq!(sink.digest(), g.sha256());
    }
}
