//! A global allocator for tests that look for secrets left in the heap: it tracks every
//! live block, and during a quarantine it keeps freed blocks instead of returning them,
//! so a test can scan both live and freed memory for a marker after a workload.
//!
//! Frees go through the same wrapper as the keymux binary's allocator
//! (`zeroizing_alloc::ZeroAlloc`, see `keymux_proxy::memory`), which wipes each block as
//! it is freed, unless [`set_wipe_on_free`] turned that off for a control run.
//!
//! Scanning reads blocks that other threads own: tests scan only while the proxy is
//! idle. Blocks quarantined are never freed (the test process ends soon after).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use zeroizing_alloc::ZeroAlloc;

/// Blocks tracked at once; a test needing more fails loudly.
const CAPACITY: usize = 1 << 20;

/// The allocator: `#[global_allocator] static HEAP: ScanningAllocator = ScanningAllocator::new();`
pub struct ScanningAllocator {
    wiping: ZeroAlloc<Quarantine>,
}

/// Frees into the quarantine while one is on, else to the system allocator.
pub struct Quarantine;

static QUARANTINE: AtomicBool = AtomicBool::new(false);
static WIPE_ON_FREE: AtomicBool = AtomicBool::new(true);
static LOCK: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
struct Block {
    /// 0: an empty slot.
    ptr: usize,
    size: usize,
    freed: bool,
}

/// An open-addressing table of blocks by address, behind [`LOCK`].
struct Table(UnsafeCell<[Block; CAPACITY]>);

// SAFETY: every access holds LOCK.
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([Block { ptr: 0, size: 0, freed: false }; CAPACITY]));

fn slot_of(ptr: usize) -> usize {
    (ptr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) % CAPACITY
}

/// Runs `f` on the table under the lock. `f` must not allocate.
fn with_table<R>(f: impl FnOnce(&mut [Block; CAPACITY]) -> R) -> R {
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::hint::spin_loop();
    }
    // SAFETY: LOCK is held, so this is the only reference.
    let result = f(unsafe { &mut *TABLE.0.get() });
    LOCK.store(false, Ordering::Release);
    result
}

fn insert(table: &mut [Block; CAPACITY], block: Block) {
    let mut slot = slot_of(block.ptr);
    for _ in 0..CAPACITY {
        if table[slot].ptr == 0 || table[slot].ptr == block.ptr {
            table[slot] = block;
            return;
        }
        slot = (slot + 1) % CAPACITY;
    }
    std::process::abort(); // the table is full: raise CAPACITY
}

fn find(table: &[Block; CAPACITY], ptr: usize) -> Option<usize> {
    let mut slot = slot_of(ptr);
    for _ in 0..CAPACITY {
        match table[slot].ptr {
            0 => return None,
            p if p == ptr => return Some(slot),
            _ => slot = (slot + 1) % CAPACITY,
        }
    }
    None
}

/// Removes the block at `slot`, shifting later entries of its probe run back.
fn remove(table: &mut [Block; CAPACITY], mut slot: usize) {
    table[slot].ptr = 0;
    let mut next = (slot + 1) % CAPACITY;
    while table[next].ptr != 0 {
        let home = slot_of(table[next].ptr);
        // Move it back if its home is not in (slot, next].
        let between = if slot <= next { slot < home && home <= next } else { slot < home || home <= next };
        if !between {
            table[slot] = table[next];
            table[next].ptr = 0;
            slot = next;
        }
        next = (next + 1) % CAPACITY;
    }
}

impl ScanningAllocator {
    /// The allocator, wiping on free and with no quarantine.
    pub const fn new() -> Self {
        Self { wiping: ZeroAlloc(Quarantine) }
    }
}

impl Default for ScanningAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: allocation is System's; the table only records addresses.
unsafe impl GlobalAlloc for Quarantine {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if QUARANTINE.load(Ordering::Relaxed) {
            with_table(|table| match find(table, ptr as usize) {
                Some(slot) => table[slot].freed = true,
                None => insert(table, Block { ptr: ptr as usize, size: layout.size(), freed: true }),
            });
            return;
        }
        with_table(|table| {
            if let Some(slot) = find(table, ptr as usize) {
                remove(table, slot);
            }
        });
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

// SAFETY: allocation is System's; frees are wiped by ZeroAlloc (unless turned off for a
// control run) and then either kept (quarantine) or returned.
unsafe impl GlobalAlloc for ScanningAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { self.wiping.alloc(layout) };
        if !ptr.is_null() {
            with_table(|table| insert(table, Block { ptr: ptr as usize, size: layout.size(), freed: false }));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WIPE_ON_FREE.load(Ordering::Relaxed) {
            // SAFETY: forwarded as is.
            unsafe { self.wiping.dealloc(ptr, layout) }
        } else {
            // SAFETY: forwarded as is, skipping the wipe.
            unsafe { Quarantine.dealloc(ptr, layout) }
        }
    }
}

/// Starts keeping freed blocks (and stops returning them to the system).
pub fn start_quarantine() {
    QUARANTINE.store(true, Ordering::SeqCst);
}

/// Whether freed blocks are wiped first (the keymux binary's behaviour; on by default).
/// Off only for a control run that shows the scan finds what it looks for.
pub fn set_wipe_on_free(wipe: bool) {
    WIPE_ON_FREE.store(wipe, Ordering::SeqCst);
}

/// Where a marker was found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Live blocks holding it.
    pub live: usize,
    /// Freed (quarantined) blocks holding it.
    pub freed: usize,
}

/// Counts the tracked blocks, live and freed, that contain `marker`. Call it while
/// the code under test is idle.
pub fn scan(marker: &[u8]) -> Found {
    with_table(|table| {
        let mut found = Found::default();
        for block in table.iter().filter(|block| block.ptr != 0 && block.size >= marker.len()) {
            // SAFETY: a tracked block is allocated (live, or quarantined and never freed)
            // and `size` bytes long; its owner is idle while we read.
            let bytes = unsafe { std::slice::from_raw_parts(block.ptr as *const u8, block.size) };
            if bytes.windows(marker.len()).any(|window| window == marker) {
                if block.freed {
                    found.freed += 1;
                } else {
                    found.live += 1;
                }
            }
        }
        found
    })
}

/// Up to eight blocks holding `marker`: their size, whether freed, and the four bytes
/// after the marker, for a failing test to say where to look.
pub fn blocks_holding(marker: &[u8]) -> Vec<(usize, bool, [u8; 4])> {
    let mut hits = [(0usize, false, [0u8; 4]); 8];
    let mut count = 0;
    with_table(|table| {
        for block in table.iter().filter(|block| block.ptr != 0 && block.size >= marker.len()) {
            // SAFETY: as in `scan`.
            let bytes = unsafe { std::slice::from_raw_parts(block.ptr as *const u8, block.size) };
            if count < hits.len()
                && let Some(at) = bytes.windows(marker.len()).position(|window| window == marker)
            {
                let mut after = [0u8; 4];
                let tail = &bytes[at + marker.len()..];
                after[..tail.len().min(4)].copy_from_slice(&tail[..tail.len().min(4)]);
                hits[count] = (block.size, block.freed, after);
                count += 1;
            }
        }
    });
    hits[..count].to_vec()
}
