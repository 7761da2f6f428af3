//! The C data that crosses the boundary between relance and a plugin.
//!
//! Rust has no stable ABI: a plugin is a cdylib with its own allocator, its
//! own standard library and its own tokio. So only `#[repr(C)]` data, raw
//! byte pointers and `extern "C"` functions cross; every richer value is a
//! versioned JSON message (see [`crate::message`]).
//!
//! Ownership: bytes the host passes in are borrowed for the duration of the
//! call; a [`Buffer`] a plugin returns was allocated by the plugin and must
//! be handed back to that plugin's `free_buffer`, never freed by the host.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// Bumped on any change to [`PluginTable`]'s layout or to a function's
/// signature or contract. A plugin whose table says otherwise is refused.
pub const ABI_VERSION: u32 = 1;

/// The one symbol a plugin library exports: `extern "C" fn() -> *const PluginTable`.
pub const ENTRY_SYMBOL: &str = "relance_plugin_entry";

/// The type of [`ENTRY_SYMBOL`].
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// The call succeeded; the buffer holds the JSON response.
pub const STATUS_OK: i32 = 0;
/// The plugin failed cleanly; the buffer holds a UTF-8 message.
pub const STATUS_ERROR: i32 = 1;
/// The plugin panicked (the panic was caught); the buffer holds the message.
pub const STATUS_PANIC: i32 = 2;

/// Borrowed UTF-8 text with a `'static` lifetime inside the plugin image.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StrRef {
    pub ptr: *const u8,
    pub len: usize,
}

impl StrRef {
    /// Points at `s`, which must outlive every reader (a static, or a leak).
    pub const fn new(s: &'static str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null(),
            len: 0,
        }
    }
}

/// Bytes allocated by a plugin and owned by it: the host reads them, then
/// returns them to the same plugin's `free_buffer`.
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl Buffer {
    pub const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Gives up ownership of `bytes` so that they can cross the boundary;
    /// only [`Buffer::into_vec`] in the same library may take them back.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
        }
    }
}

/// What a plugin exports. The first field is the ABI version so that a host
/// can read it whatever the rest of the layout is; the second is the size,
/// so that a host never reads past a shorter (older) table.
#[repr(C)]
#[derive(Debug)]
pub struct PluginTable {
    pub abi_version: u32,
    /// `size_of::<PluginTable>()` as the plugin was compiled.
    pub size: u32,
    pub name: StrRef,
    pub version: StrRef,
    /// The JSON [`crate::message::Manifest`].
    pub manifest: StrRef,
    /// Builds an instance from JSON settings. On [`STATUS_OK`] `*instance`
    /// is set; otherwise `*out` holds a message.
    pub create: unsafe extern "C" fn(
        settings: *const u8,
        settings_len: usize,
        instance: *mut *mut c_void,
        out: *mut Buffer,
    ) -> i32,
    /// Handles one JSON request. May block; runs on the instance's thread.
    pub call: unsafe extern "C" fn(
        instance: *mut c_void,
        call_id: u64,
        request: *const u8,
        request_len: usize,
        out: *mut Buffer,
    ) -> i32,
    /// Asks the call `call_id` to stop. Called from another thread than
    /// `call`, so instances must be thread-safe for it.
    pub cancel: unsafe extern "C" fn(instance: *mut c_void, call_id: u64),
    /// Drops an instance; no call may be running on it.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
    /// Frees a buffer this plugin returned.
    pub free_buffer: unsafe extern "C" fn(buffer: Buffer),
}

// SAFETY: the table only holds function pointers and pointers to immutable
// static text, which any thread may read.
unsafe impl Sync for PluginTable {}
// SAFETY: as above: nothing in the table is tied to a thread.
unsafe impl Send for PluginTable {}

/// The size a host expects, as a `u32` for the table's `size` field.
pub const TABLE_SIZE: u32 = std::mem::size_of::<PluginTable>() as u32;
