//! The plugin author's side: implement [`Plugin`] in safe Rust and call
//! [`crate::export_plugin!`]; this module turns it into a [`PluginTable`],
//! catches every panic at the boundary and owns the buffers it hands out.
#![allow(unsafe_code)]

use crate::abi::{
    ABI_VERSION, Buffer, PluginTable, STATUS_ERROR, STATUS_OK, STATUS_PANIC, StrRef, TABLE_SIZE,
};
use crate::message::{
    DeliverRequest, Health, HealthcheckRequest, Manifest, Outcome, PROTOCOL, Request, RequestBody,
    Response, ResponseBody,
};
use serde_json::Value;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A channel plugin. One value is one instance, built from the channel's
/// settings; `deliver` runs on the instance's own thread, so it may block.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// Static facts about the plugin; read at load, before any instance.
    fn manifest() -> Manifest;

    /// Builds an instance from the channel's `settings` (a JSON object).
    /// An error here is permanent: the configuration is wrong.
    fn create(settings: Value) -> Result<Self, String>;

    /// Delivers one follow-up. Look at `cancel` in long waits: the host
    /// cancels a call that outlived its timeout.
    fn deliver(&self, request: DeliverRequest, cancel: &Cancel) -> Outcome;

    /// Delivers several follow-ups; one outcome per request, in order. The
    /// host sends batches only to a plugin whose manifest declares
    /// `max_batch` above 1, and counts its call timeout over the whole
    /// call: override this to send them at once. By default they go one
    /// after the other, and those left when the host cancels are retried.
    fn deliver_batch(&self, requests: Vec<DeliverRequest>, cancel: &Cancel) -> Vec<Outcome> {
        requests
            .into_iter()
            .map(|r| {
                if cancel.is_cancelled() {
                    Outcome::retryable("cancelled by the host")
                } else {
                    self.deliver(r, cancel)
                }
            })
            .collect()
    }

    /// Whether the remote side is reachable and the settings work.
    fn healthcheck(&self, _request: HealthcheckRequest, _cancel: &Cancel) -> Health {
        Health {
            healthy: true,
            detail: String::new(),
        }
    }

    /// Raw request bytes to raw response bytes. Override only to go below
    /// the typed protocol (the echo test plugin does, to return garbage).
    fn handle(&self, request: &[u8], cancel: &Cancel) -> Vec<u8> {
        handle_typed(self, request, cancel)
    }
}

/// The default [`Plugin::handle`]: parse, check the protocol, dispatch.
pub fn handle_typed<P: Plugin>(plugin: &P, request: &[u8], cancel: &Cancel) -> Vec<u8> {
    let body = match serde_json::from_slice::<Request>(request) {
        Err(e) => ResponseBody::Error {
            message: format!("unreadable request: {e}"),
        },
        Ok(r) if r.protocol.major != PROTOCOL.major => ResponseBody::Error {
            message: format!(
                "protocol {} is not supported (this plugin speaks {})",
                r.protocol, PROTOCOL
            ),
        },
        Ok(r) => match r.body {
            RequestBody::Deliver(d) => ResponseBody::Delivery(plugin.deliver(*d, cancel)),
            RequestBody::DeliverBatch { requests } => ResponseBody::Deliveries {
                outcomes: plugin.deliver_batch(requests, cancel),
            },
            RequestBody::Healthcheck(h) => ResponseBody::Health(plugin.healthcheck(h, cancel)),
            RequestBody::Describe => ResponseBody::Description {
                manifest: P::manifest(),
            },
        },
    };
    encode(&Response::new(body))
}

fn encode(response: &Response) -> Vec<u8> {
    // Serializing plain derived data to a Vec cannot fail.
    serde_json::to_vec(response).unwrap_or_else(|e| {
        format!(r#"{{"protocol":{{"major":1,"minor":0}},"type":"error","message":"{e}"}}"#)
            .into_bytes()
    })
}

/// A cancellation signal for one call, usable from blocking and async code.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    condvar: Condvar,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        let wakers =
            std::mem::take(&mut *self.0.wakers.lock().unwrap_or_else(PoisonError::into_inner));
        for w in wakers {
            w.wake();
        }
        self.0.condvar.notify_all();
    }

    /// Blocks for `duration` or until cancelled; true when cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self.0.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .0
                .condvar
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Resolves when cancelled; race it against the work with `select!`.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled(self.clone())
    }
}

/// The future of [`Cancel::cancelled`].
#[derive(Debug)]
pub struct Cancelled(Cancel);

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.is_cancelled() {
            return Poll::Ready(());
        }
        let inner = &self.0.0;
        inner
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cx.waker().clone());
        if self.0.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// One instance behind the opaque pointer the host holds.
struct Instance<P> {
    plugin: P,
    calls: Mutex<HashMap<u64, Cancel>>,
}

thread_local! {
    /// Set while this thread runs plugin code on the host's behalf.
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running plugin code until dropped.
struct InCall(bool);

impl InCall {
    fn enter() -> Self {
        Self(IN_CALL.with(|c| c.replace(true)))
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        let before = self.0;
        IN_CALL.with(|c| c.set(before));
    }
}

/// Panics inside plugin calls are caught and reported to the host as a
/// status. The default hook would first capture a backtrace when
/// `RUST_BACKTRACE` is set, which on a loaded machine can outlast the host's
/// call timeout and make a panic look like a hang. So inside calls the hook
/// prints one line and captures nothing; other panics keep the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_CALL.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                eprintln!(
                    "relance plugin panicked{at}: {} (caught; reported to the host)",
                    panic_message(info.payload())
                );
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Writes `bytes` to `out`, which the host passed and owns.
unsafe fn put(out: *mut Buffer, bytes: Vec<u8>) {
    if out.is_null() {
        return;
    }
    // SAFETY: the host passes a valid, writable Buffer for the call's duration.
    unsafe { out.write(Buffer::from_vec(bytes)) };
}

unsafe fn borrowed<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: the host guarantees `len` readable bytes at `ptr` during the call.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

unsafe extern "C" fn create<P: Plugin>(
    settings: *const u8,
    settings_len: usize,
    instance: *mut *mut c_void,
    out: *mut Buffer,
) -> i32 {
    // SAFETY: see `borrowed`.
    let bytes = unsafe { borrowed(settings, settings_len) };
    let _in_call = InCall::enter();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let value: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(bytes).map_err(|e| format!("settings are not JSON: {e}"))?
        };
        P::create(value)
    }));
    match result {
        Ok(Ok(plugin)) => {
            let boxed = Box::new(Instance {
                plugin,
                calls: Mutex::new(HashMap::new()),
            });
            if !instance.is_null() {
                // SAFETY: the host passes a valid out-pointer.
                unsafe { instance.write(Box::into_raw(boxed).cast()) };
            }
            STATUS_OK
        }
        Ok(Err(message)) => {
            // SAFETY: `out` is the host's Buffer slot.
            unsafe { put(out, message.into_bytes()) };
            STATUS_ERROR
        }
        Err(payload) => {
            // SAFETY: as above.
            unsafe { put(out, panic_message(&*payload).into_bytes()) };
            STATUS_PANIC
        }
    }
}

unsafe extern "C" fn call<P: Plugin>(
    instance: *mut c_void,
    call_id: u64,
    request: *const u8,
    request_len: usize,
    out: *mut Buffer,
) -> i32 {
    if instance.is_null() {
        // SAFETY: `out` is the host's Buffer slot.
        unsafe { put(out, b"null instance".to_vec()) };
        return STATUS_ERROR;
    }
    // SAFETY: `instance` came from `create::<P>` and is not destroyed yet.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    // SAFETY: see `borrowed`.
    let bytes = unsafe { borrowed(request, request_len) };
    let cancel = Cancel::new();
    inst.calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(call_id, cancel.clone());
    let in_call = InCall::enter();
    let result = catch_unwind(AssertUnwindSafe(|| inst.plugin.handle(bytes, &cancel)));
    drop(in_call);
    inst.calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&call_id);
    match result {
        Ok(response) => {
            // SAFETY: `out` is the host's Buffer slot.
            unsafe { put(out, response) };
            STATUS_OK
        }
        Err(payload) => {
            // SAFETY: as above.
            unsafe { put(out, panic_message(&*payload).into_bytes()) };
            STATUS_PANIC
        }
    }
}

unsafe extern "C" fn cancel<P: Plugin>(instance: *mut c_void, call_id: u64) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `create::<P>` and is alive; `calls` is a Mutex.
    let inst = unsafe { &*instance.cast::<Instance<P>>() };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(c) = inst
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&call_id)
        {
            c.cancel();
        }
    }));
}

unsafe extern "C" fn destroy<P: Plugin>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: `instance` came from `Box::into_raw` in `create::<P>` and the
    // host destroys it once, with no call running.
    let boxed = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
}

unsafe extern "C" fn free_buffer(buffer: Buffer) {
    if buffer.ptr.is_null() {
        return;
    }
    // SAFETY: the buffer was made by `Buffer::from_vec` in this library and
    // is returned exactly once.
    let v = unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(v)));
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Builds the table of `P`. Called once per library by the code that
/// [`crate::export_plugin!`] generates; the strings are leaked on purpose
/// since plugins are never unloaded.
pub fn build_table<P: Plugin>() -> PluginTable {
    install_panic_hook();
    let manifest = P::manifest();
    let json = serde_json::to_string(&manifest).unwrap_or_default();
    PluginTable {
        abi_version: ABI_VERSION,
        size: TABLE_SIZE,
        name: StrRef::new(leak(manifest.name)),
        version: StrRef::new(leak(manifest.version)),
        manifest: StrRef::new(leak(json)),
        create: create::<P>,
        call: call::<P>,
        cancel: cancel::<P>,
        destroy: destroy::<P>,
        free_buffer,
    }
}

/// Exports a [`Plugin`] type.
///
/// Generates `pub fn plugin_table() -> &'static PluginTable`, which lets a
/// host link the plugin in and still go through the ABI, and, with the
/// calling crate's `export` feature, the `relance_plugin_entry` symbol of
/// the cdylib. The symbol is behind a feature so that several plugins can
/// be linked into one binary without clashing.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        /// The plugin's ABI table, to link it into a host without `dlopen`.
        pub fn plugin_table() -> &'static $crate::abi::PluginTable {
            static TABLE: ::std::sync::OnceLock<$crate::abi::PluginTable> =
                ::std::sync::OnceLock::new();
            TABLE.get_or_init($crate::sdk::build_table::<$ty>)
        }

        /// The entry symbol the host looks up in the shared library.
        #[cfg(feature = "export")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn relance_plugin_entry() -> *const $crate::abi::PluginTable {
            // Panics cannot escape: building the table only serializes plain data.
            match ::std::panic::catch_unwind(plugin_table) {
                Ok(t) => t,
                Err(_) => ::std::ptr::null(),
            }
        }
    };
}
