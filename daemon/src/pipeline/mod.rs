//! The pipeline: the passes that drive the domain over the store port
//! (rescoring, planning, dispatch, schedules, the desk's reports, call tasks).

pub mod config;
pub mod dispatch;
pub mod plan;
pub mod pressure;
pub mod preview;
pub mod report;
pub mod request;
pub mod rescore;
pub mod retention;
pub mod scheduler;
pub mod tasks;
pub mod waiting;
pub mod whatif;
