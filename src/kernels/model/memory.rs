//! The model device's memory: address ranges without backing, and the bytes of small uploads
//! kept in 4 KiB pages wherever they land (see the module above for why).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::MAX_KEPT_BYTES;
use crate::kernels::KernelError;

pub(super) const PAGE: u64 = 4096;

/// The kept upload bytes, by page.
#[derive(Default)]
pub(super) struct Pages {
    pages: HashMap<u64, Box<[u8; PAGE as usize]>>,
}

impl Pages {
    /// `(page, offset in it, bytes)` of each page piece of `[addr, addr + len)`.
    fn pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let end = addr + len as u64;
        let mut at = addr;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let (page, off) = (at / PAGE, (at % PAGE) as usize);
                let n = (PAGE as usize - off).min((end - at) as usize);
                at += n as u64;
                (page, off, n)
            })
        })
    }
    pub(super) fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), KernelError> {
        let mut done = 0;
        for (page, off, n) in Self::pieces(addr, data.len()) {
            let full = self.pages.len() as u64 * PAGE >= MAX_KEPT_BYTES as u64;
            let p = match self.pages.get_mut(&page) {
                Some(p) => p,
                None if full => {
                    return Err(KernelError::OutOfMemory(format!(
                        "the cost model keeps at most {MAX_KEPT_BYTES} bytes of small uploads"
                    )))
                }
                None => self.pages.entry(page).or_insert_with(|| Box::new([0; PAGE as usize])),
            };
            p[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    pub(super) fn read(&self, addr: u64, out: &mut [u8]) {
        let mut done = 0;
        for (page, off, n) in Self::pieces(addr, out.len()) {
            match self.pages.get(&page) {
                Some(p) => out[done..done + n].copy_from_slice(&p[off..off + n]),
                None => out[done..done + n].fill(0),
            }
            done += n;
        }
    }
    pub(super) fn forget(&mut self, addr: u64, len: usize) {
        let (first, last) = (addr / PAGE, (addr + len as u64).div_ceil(PAGE));
        if (last - first) as usize > self.pages.len() {
            self.pages.retain(|&p, _| p < first || p >= last);
        } else {
            (first..last).for_each(|p| {
                self.pages.remove(&p);
            });
        }
    }
}

/// The memory side, shared with the buffers so that dropping one frees its range.
#[derive(Default)]
pub(crate) struct ModelMemory {
    pages: Mutex<Pages>,
    /// The next address to hand out (ranges are never reused).
    pub(super) next: Mutex<u64>,
    /// Bytes of live buffers.
    pub(super) allocated: Mutex<u64>,
}

impl ModelMemory {
    pub(super) fn lock_pages(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A model device's buffer: an address range, freed on drop.
pub(crate) struct ModelAlloc {
    pub(super) memory: Arc<ModelMemory>,
    pub(super) addr: u64,
    pub(super) len: usize,
}

impl Drop for ModelAlloc {
    fn drop(&mut self) {
        self.memory.lock_pages().forget(self.addr, self.len);
        let mut a = self.memory.allocated.lock().unwrap_or_else(|e| e.into_inner());
        *a = a.saturating_sub(self.len as u64);
    }
}

impl super::costs::DeviceMemory for ModelMemory {
    fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.lock_pages().read(addr, &mut b);
        u32::from_le_bytes(b)
    }
}
