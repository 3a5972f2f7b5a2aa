//! keymux client.
