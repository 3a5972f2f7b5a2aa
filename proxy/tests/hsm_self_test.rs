//! A token whose AES-GCM encrypts under an IV it does not report (it would write blobs
//! nobody can open) is refused when the backend opens, loudly, before any blob is
//! written. Its own test binary: the test module's behaviour is chosen by an
//! environment variable read when it encrypts.

use keymux_proxy::backend::pkcs11::{Pkcs11Backend, Pkcs11Error};
use keymux_test_support::pkcs11::{own_iv_module, token};

#[test]
#[allow(unsafe_code)]
fn a_token_that_hides_its_gcm_iv_is_refused_when_the_backend_opens() {
    // SAFETY: the only test of this binary, and nothing else runs or reads the
    // environment while it is set.
    unsafe { std::env::set_var("KEYMUX_SHIM_GCM", "hidden") };
    let mut config = token().config(1);
    config.module = own_iv_module();
    let error = Pkcs11Backend::open(&config).err().expect("the backend refuses the token");
    assert!(matches!(error, Pkcs11Error::SelfTest(_)), "{error}");
    assert!(error.to_string().contains("IV it does not write back"), "{error}");

    // The same module, honest about its IV, passes.
    // SAFETY: as above.
    unsafe { std::env::remove_var("KEYMUX_SHIM_GCM") };
    Pkcs11Backend::open(&config).expect("a token that reports its IV is used");
}
