//! WGSL compute shaders (loaded with `include_str!`), a `#[repr(C)]` host mirror of each shader's uniform block,
//! and a CPU twin of each shader that mirrors its indexing. No wgpu dependency: the engine owns the device.

pub mod robust;

/// The robust update shader's source.
pub const ROBUST_UPDATE_WGSL: &str = include_str!("../wgsl/robust_update.wgsl");

/// Every shader, by name, for validation.
pub const ALL: &[(&str, &str)] = &[("robust_update.wgsl", ROBUST_UPDATE_WGSL)];

#[cfg(test)]
mod tests {
    #[test]
    fn every_shader_validates_with_naga() {
        for (name, src) in super::ALL {
            let module =
                naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }
}
