//! Evaluation against labelled data: NAB scoring for detection quality.

pub mod nab;
