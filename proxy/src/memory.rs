//! The keymux binary's allocator: every heap block is wiped as it is freed.
//!
//! Secrets are zeroized where keymux holds them (`SecretBytes`, `Zeroizing`, the codec's
//! buffers), but buffers move when they grow (a `Vec` or `BytesMut` reallocates and
//! frees the old block with whatever it held), and libraries (rustls, quinn, tokio-util)
//! keep their own buffers. Wiping on free covers all of them: a DEK never outlives the
//! blocks that held it. The cost was measured (docs/SECURITY.md); the wrapper is
//! 1Password's `zeroizing-alloc` over the system allocator, whose `realloc` becomes
//! allocate, copy, wipe and free.

/// The allocator type the binary installs with `#[global_allocator]`.
pub type WipingAllocator = zeroizing_alloc::ZeroAlloc<std::alloc::System>;

/// The allocator the binary installs.
pub const WIPING_ALLOCATOR: WipingAllocator = zeroizing_alloc::ZeroAlloc(std::alloc::System);
