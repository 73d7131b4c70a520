//! Evaluation against labelled data: NAB scoring for detection quality, the NAB corpus run through the engine,
//! root-cause ranking accuracy.

pub mod nab;
pub mod nab_run;
pub mod rca;
