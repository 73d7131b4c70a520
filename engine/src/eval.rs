//! Evaluation against labelled data: NAB scoring for detection quality, and the NAB corpus run through the engine.

pub mod nab;
pub mod nab_run;
