//! Evaluation against labelled data: NAB scoring for detection quality, root-cause ranking accuracy.

pub mod nab;
pub mod rca;
