//! The host's side of the ABI: safe calls through a validated table.
//!
//! Everything unsafe about talking to a plugin is here, so that the daemon's
//! host (threads, timeouts, restarts) is safe Rust.
#![allow(unsafe_code)]

use crate::abi::{ABI_VERSION, Buffer, PluginTable, STATUS_OK, STATUS_PANIC, StrRef, TABLE_SIZE};
use crate::message::{Manifest, PROTOCOL};
use std::ffi::c_void;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the entry point returned no table")]
    Null,
    #[error("built for plugin ABI {found}, this relance speaks ABI {expected}")]
    AbiVersion { found: u32, expected: u32 },
    #[error("its ABI table is {found} bytes, expected at least {expected}")]
    Size { found: u32, expected: u32 },
    #[error("its manifest is unreadable: {0}")]
    Manifest(String),
    #[error(
        "it speaks protocol {found}, newer than this relance's {expected}: upgrade relance or use an older plugin"
    )]
    Protocol { found: String, expected: String },
}

/// A checked table: right ABI, right size, readable manifest, supported
/// protocol. Plugins are never unloaded, so `'static` holds.
#[derive(Clone, Copy, Debug)]
pub struct Table {
    raw: &'static PluginTable,
}

/// How a raw call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CallStatus {
    Ok(Vec<u8>),
    Error(String),
    Panic(String),
}

impl Table {
    /// Checks a table pointer returned by a plugin's entry point.
    ///
    /// # Safety
    /// `ptr` must be null or point to memory that stays valid forever (the
    /// library is never unloaded) and holds at least a `u32`; the rest is
    /// only read once the declared size says it is there.
    pub unsafe fn from_raw(ptr: *const PluginTable) -> Result<(Self, Manifest), TableError> {
        if ptr.is_null() {
            return Err(TableError::Null);
        }
        // SAFETY: the first field of every ABI's table is the u32 version.
        let abi = unsafe { ptr.cast::<u32>().read() };
        if abi != ABI_VERSION {
            return Err(TableError::AbiVersion {
                found: abi,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: same ABI, so the second field is the u32 size.
        let size = unsafe { ptr.cast::<u32>().add(1).read() };
        if size < TABLE_SIZE {
            return Err(TableError::Size {
                found: size,
                expected: TABLE_SIZE,
            });
        }
        // SAFETY: same ABI and a large enough size: the whole table is there.
        let raw: &'static PluginTable = unsafe { &*ptr };
        Self::check(raw)
    }

    /// Checks a table linked into this binary.
    pub fn linked(raw: &'static PluginTable) -> Result<(Self, Manifest), TableError> {
        if raw.abi_version != ABI_VERSION {
            return Err(TableError::AbiVersion {
                found: raw.abi_version,
                expected: ABI_VERSION,
            });
        }
        Self::check(raw)
    }

    fn check(raw: &'static PluginTable) -> Result<(Self, Manifest), TableError> {
        let text =
            static_str(raw.manifest).ok_or_else(|| TableError::Manifest("not UTF-8".into()))?;
        let manifest: Manifest =
            serde_json::from_str(text).map_err(|e| TableError::Manifest(e.to_string()))?;
        if manifest.protocol.major > PROTOCOL.major {
            return Err(TableError::Protocol {
                found: manifest.protocol.to_string(),
                expected: PROTOCOL.to_string(),
            });
        }
        Ok((Self { raw }, manifest))
    }

    pub fn name(&self) -> &'static str {
        static_str(self.raw.name).unwrap_or("?")
    }

    /// Builds an instance; `Err` carries the plugin's message.
    pub fn create(&self, settings: &[u8]) -> Result<InstancePtr, CallStatus> {
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut out = Buffer::empty();
        // SAFETY: the pointers are valid for the call; `settings` is borrowed.
        let status = unsafe {
            (self.raw.create)(settings.as_ptr(), settings.len(), &mut instance, &mut out)
        };
        let bytes = self.take(out);
        if status == STATUS_OK && !instance.is_null() {
            return Ok(InstancePtr(instance));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Err(if status == STATUS_PANIC {
            CallStatus::Panic(text)
        } else {
            CallStatus::Error(text)
        })
    }

    /// Runs one request on `instance`; blocks for as long as the plugin does.
    /// At most `limit` bytes of response are accepted.
    pub fn call(
        &self,
        instance: &InstancePtr,
        call_id: u64,
        request: &[u8],
        limit: usize,
    ) -> CallStatus {
        let mut out = Buffer::empty();
        // SAFETY: `instance` is alive (owned by the caller), pointers valid.
        let status = unsafe {
            (self.raw.call)(
                instance.0,
                call_id,
                request.as_ptr(),
                request.len(),
                &mut out,
            )
        };
        if out.len > limit {
            let len = out.len;
            self.free(out);
            return CallStatus::Error(format!(
                "response of {len} bytes is over the limit of {limit}"
            ));
        }
        let bytes = self.take(out);
        match status {
            STATUS_OK => CallStatus::Ok(bytes),
            STATUS_PANIC => CallStatus::Panic(String::from_utf8_lossy(&bytes).into_owned()),
            _ => CallStatus::Error(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Asks a running call to stop; safe from any thread.
    pub fn cancel(&self, instance: &InstancePtr, call_id: u64) {
        // SAFETY: the plugin contract makes `cancel` thread-safe.
        unsafe { (self.raw.cancel)(instance.0, call_id) }
    }

    /// Drops an instance.
    ///
    /// # Safety
    /// No call or cancel may be running on `instance`, and it must never be
    /// used again (it is left dangling).
    pub unsafe fn destroy(&self, instance: &InstancePtr) {
        // SAFETY: the caller guarantees exclusive, final use.
        unsafe { (self.raw.destroy)(instance.0) }
    }

    /// Copies a plugin buffer and gives it back to the plugin.
    fn take(&self, buffer: Buffer) -> Vec<u8> {
        let bytes = if buffer.ptr.is_null() || buffer.len == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin returned `len` initialized bytes at `ptr`.
            unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec()
        };
        self.free(buffer);
        bytes
    }

    fn free(&self, buffer: Buffer) {
        if !buffer.ptr.is_null() {
            // SAFETY: the buffer came from this plugin and is freed once.
            unsafe { (self.raw.free_buffer)(buffer) }
        }
    }
}

fn static_str(s: StrRef) -> Option<&'static str> {
    if s.ptr.is_null() {
        return Some("");
    }
    // SAFETY: the plugin points at static text that lives as long as the
    // library, which is never unloaded.
    let bytes = unsafe { std::slice::from_raw_parts(s.ptr, s.len) };
    std::str::from_utf8(bytes).ok()
}

/// An opaque instance. Plugins make instances thread-safe (`cancel` comes
/// from another thread), so the pointer may move between threads.
#[derive(Debug)]
pub struct InstancePtr(*mut c_void);

// SAFETY: the ABI contract requires instances to be usable from any thread
// (calls are serialized by the host; `cancel` is concurrent by design).
unsafe impl Send for InstancePtr {}
// SAFETY: as above.
unsafe impl Sync for InstancePtr {}
