//! WGSL compute shaders (loaded with `include_str!`), a `#[repr(C)]` host mirror of each shader's uniform block,
//! and a CPU twin of each shader that mirrors its indexing. No wgpu dependency: the engine owns the device.

pub mod robust;
pub mod seasonal;
pub mod spectral;
pub mod spot;

pub use robust::{PointGpu, RobustParamsGpu, ScoreGpu};
pub use seasonal::{SeasonalParamsGpu, SeasonalPointGpu, SeasonalQueryGpu};
pub use spectral::SpectralParamsGpu;
pub use spot::{SpotOutGpu, SpotParamsGpu, SpotPointGpu, SpotStateGpu};

/// The robust update shader's source.
pub const ROBUST_UPDATE_WGSL: &str = include_str!("../wgsl/robust_update.wgsl");

/// The calibrated-threshold (SPOT) shader's source.
pub const SPOT_UPDATE_WGSL: &str = include_str!("../wgsl/spot_update.wgsl");

/// The spectral residual shader's source.
pub const SPECTRAL_UPDATE_WGSL: &str = include_str!("../wgsl/spectral_update.wgsl");

/// The seasonal baseline shader's source.
pub const SEASONAL_UPDATE_WGSL: &str = include_str!("../wgsl/seasonal_update.wgsl");

/// The seasonal offset shader's source (reads the state `seasonal_update.wgsl` keeps).
pub const SEASONAL_OFFSET_WGSL: &str = include_str!("../wgsl/seasonal_offset.wgsl");

/// Every shader, by name, for validation.
pub const ALL: &[(&str, &str)] = &[
    ("robust_update.wgsl", ROBUST_UPDATE_WGSL),
    ("spot_update.wgsl", SPOT_UPDATE_WGSL),
    ("spectral_update.wgsl", SPECTRAL_UPDATE_WGSL),
    ("seasonal_update.wgsl", SEASONAL_UPDATE_WGSL),
    ("seasonal_offset.wgsl", SEASONAL_OFFSET_WGSL),
];

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

    /// Every host mirror has the size and alignment naga computes for its WGSL struct.
    #[test]
    fn host_mirrors_match_the_wgsl_layouts() {
        use crate::robust::{PointGpu, RobustParamsGpu, ScoreGpu};
        use crate::seasonal::{SeasonalParamsGpu, SeasonalPointGpu, SeasonalQueryGpu};
        use crate::spectral::SpectralParamsGpu;
        use crate::spot::{SpotOutGpu, SpotParamsGpu, SpotPointGpu, SpotStateGpu};
        let mirrors: &[(&str, &str, usize, usize)] = &[
            (super::ROBUST_UPDATE_WGSL, "Params", size_of::<RobustParamsGpu>(), align_of::<RobustParamsGpu>()),
            (super::ROBUST_UPDATE_WGSL, "Point", size_of::<PointGpu>(), align_of::<PointGpu>()),
            (super::ROBUST_UPDATE_WGSL, "Score", size_of::<ScoreGpu>(), align_of::<ScoreGpu>()),
            (super::SPOT_UPDATE_WGSL, "Params", size_of::<SpotParamsGpu>(), align_of::<SpotParamsGpu>()),
            (super::SPOT_UPDATE_WGSL, "State", size_of::<SpotStateGpu>(), align_of::<SpotStateGpu>()),
            (super::SPOT_UPDATE_WGSL, "Point", size_of::<SpotPointGpu>(), align_of::<SpotPointGpu>()),
            (super::SPOT_UPDATE_WGSL, "Out", size_of::<SpotOutGpu>(), align_of::<SpotOutGpu>()),
            (super::SPECTRAL_UPDATE_WGSL, "Params", size_of::<SpectralParamsGpu>(), align_of::<SpectralParamsGpu>()),
            (super::SPECTRAL_UPDATE_WGSL, "Point", size_of::<PointGpu>(), align_of::<PointGpu>()),
            (super::SEASONAL_UPDATE_WGSL, "Params", size_of::<SeasonalParamsGpu>(), align_of::<SeasonalParamsGpu>()),
            (super::SEASONAL_UPDATE_WGSL, "Point", size_of::<SeasonalPointGpu>(), align_of::<SeasonalPointGpu>()),
            (super::SEASONAL_OFFSET_WGSL, "Params", size_of::<SeasonalParamsGpu>(), align_of::<SeasonalParamsGpu>()),
            (super::SEASONAL_OFFSET_WGSL, "Query", size_of::<SeasonalQueryGpu>(), align_of::<SeasonalQueryGpu>()),
        ];
        for &(src, name, size, align) in mirrors {
            let module = naga::front::wgsl::parse_str(src).expect("validated above");
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).expect("layout");
            let (handle, _) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("no struct {name}"));
            let layout = layouter[handle];
            assert_eq!(layout.size as usize, size, "size of {name}");
            // The host struct may be less aligned than WGSL's (uniform blocks round up to 16); it must not be more.
            assert!(align <= layout.alignment.round_up(1) as usize, "alignment of {name}");
        }
    }
}
