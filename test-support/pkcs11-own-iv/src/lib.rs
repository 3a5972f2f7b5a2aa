//! A PKCS#11 module for tests that stands in front of a real one (SoftHSM2, or the
//! module in `KEYMUX_TEST_PKCS11_MODULE`) and passes every call through, except that
//! for AES-GCM it ignores the caller's IV and chooses its own, as AWS CloudHSM and some
//! FIPS-mode tokens do.
//!
//! - By default it writes the IV it chose into the mechanism parameter, as those
//!   tokens do: a caller that reads the IV back after `C_Encrypt` can decrypt.
//! - With `KEYMUX_SHIM_GCM=hidden` it does not write the IV back: a token that
//!   misbehaves, whose ciphertexts nobody can decrypt. keymux's session self-test must
//!   refuse it.
//!
//! A fake in that one respect, named as such: AWS CloudHSM has no local implementation
//! (its client needs a cluster), and neither SoftHSM2 nor opencryptoki chooses its own
//! GCM IV. Everything else, the cryptography included, is the real module's.

#![allow(non_snake_case, unsafe_code)]

use std::sync::OnceLock;

use cryptoki_sys::{
    CK_FUNCTION_LIST, CK_FUNCTION_LIST_PTR_PTR, CK_GCM_PARAMS, CK_MECHANISM, CK_MECHANISM_PTR,
    CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CKM_AES_GCM, CKR_ARGUMENTS_BAD, CKR_GENERAL_ERROR, CKR_OK,
};

/// The real module and the two function lists: its own, and ours.
struct Shim {
    _library: libloading::Library,
    real: CK_FUNCTION_LIST,
    ours: CK_FUNCTION_LIST,
}

static SHIM: OnceLock<Option<Shim>> = OnceLock::new();

fn shim() -> Option<&'static Shim> {
    SHIM.get_or_init(|| {
        let path = std::env::var_os("KEYMUX_SHIM_REAL_MODULE")
            .or_else(|| std::env::var_os("KEYMUX_TEST_PKCS11_MODULE"))
            .unwrap_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into());
        // SAFETY: loading a PKCS#11 module runs its initialisers, as any PKCS#11
        // application does.
        let library = unsafe { libloading::Library::new(&path) }.ok()?;
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: C_GetFunctionList has this signature in every PKCS#11 module, and
        // fills `list` with a pointer to a function list the module keeps alive.
        let real = unsafe {
            let get: libloading::Symbol<unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV> =
                library.get(b"C_GetFunctionList\0").ok()?;
            if get(&mut list) != CKR_OK || list.is_null() {
                return None;
            }
            *list
        };
        let ours = CK_FUNCTION_LIST { C_EncryptInit: Some(encrypt_init), ..real };
        Some(Shim { _library: library, real, ours })
    })
    .as_ref()
}

/// The module's entry point: the real module's functions, with our `C_EncryptInit`.
///
/// # Safety
/// `list` must be valid for a write, as PKCS#11 requires of its caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    let Some(shim) = shim() else { return CKR_GENERAL_ERROR };
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    // SAFETY: checked non-null above; the list lives as long as the process.
    unsafe { *list = &shim.ours as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
    CKR_OK
}

/// `C_EncryptInit`, choosing the IV of an AES-GCM encryption.
unsafe extern "C" fn encrypt_init(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_PTR,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let Some(shim) = shim() else { return CKR_GENERAL_ERROR };
    let Some(real) = shim.real.C_EncryptInit else { return CKR_GENERAL_ERROR };
    // SAFETY: the caller passes a valid mechanism, and for CKM_AES_GCM a valid
    // CK_GCM_PARAMS whose IV is `ulIvLen` bytes, as PKCS#11 requires.
    unsafe {
        if mechanism.is_null() || (*mechanism).mechanism != CKM_AES_GCM || (*mechanism).pParameter.is_null() {
            return real(session, mechanism, key);
        }
        let params = (*mechanism).pParameter as *mut CK_GCM_PARAMS;
        let length = (*params).ulIvLen as usize;
        let mut chosen = vec![0u8; length];
        if getrandom::fill(&mut chosen).is_err() {
            return CKR_GENERAL_ERROR;
        }
        if std::env::var("KEYMUX_SHIM_GCM").as_deref() == Ok("hidden") {
            // Encrypt under our IV without telling the caller.
            let mut hidden = CK_GCM_PARAMS { pIv: chosen.as_mut_ptr(), ..*params };
            let mut copy =
                CK_MECHANISM { pParameter: (&mut hidden as *mut CK_GCM_PARAMS).cast(), ..*mechanism };
            return real(session, &mut copy, key);
        }
        std::ptr::copy_nonoverlapping(chosen.as_ptr(), (*params).pIv, length);
        real(session, mechanism, key)
    }
}
