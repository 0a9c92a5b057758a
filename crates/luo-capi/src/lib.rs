//! `libluo`: the C ABI of the luo client library, for programs in C, C++
//! and any language with a C foreign-function interface. The header is
//! `include/luo.h` (generated from this crate by cbindgen), the pkg-config
//! file `luo.pc`; `docs/c-api.md` is the guide.
//!
//! Everything the Rust [`luo`] crate does is here: connect, create,
//! retrieve and persist sessions, preserve, retrieve, fetch and unpreserve
//! files (one or a batch), hand over, finish, update, upgrade, kexec,
//! status and listings.
//!
//! # Conventions
//!
//! - A function returns `0` (or a descriptor, `>= 0`) on success and a
//!   negative errno on failure: the errno the Rust client reports, which is
//!   the kernel's where the kernel has one. The failure's message is
//!   [`luo_last_error`], per thread; a batch preserve's refused token is
//!   [`luo_last_error_token`].
//! - Handles (`struct luo_client`, `struct luo_session`) are opaque and
//!   freed with `luo_client_close` and `luo_session_close`.
//! - Listings come back as arrays of C structs freed by one call
//!   (`luo_session_info_free`), and, for programs that would rather parse
//!   or pass on the agent's JSON, as JSON strings freed by `luo_string_free`.
//! - Descriptors returned are the caller's (`O_CLOEXEC`); descriptors passed
//!   in are borrowed, except where a function says it adopts one.
//! - No Rust panic crosses the boundary: every function catches it and
//!   returns `-EIO` with a message.
//!
//! # Unsafe code
//!
//! The project keeps `unsafe` in luo-sys, except here: exported C functions
//! need `#[no_mangle]`, which the `unsafe_code` lint treats as unsafe, and
//! cbindgen generates the header from the function items as written in
//! this crate, which it could not see if a luo-sys macro produced them
//! (cbindgen does not expand macros on a stable toolchain). So this crate
//! allows `unsafe_code`, and keeps every use in [`ffi`]'s pointer handling
//! with a SAFETY comment (clippy's `undocumented_unsafe_blocks` denies a
//! missing one); the calls into luo are in [`api`], which forbids unsafe
//! code.

#![deny(missing_docs)]

pub mod api;
pub mod ffi;
pub mod types;

pub use ffi::*;
pub use types::*;
