//! Running a scenario: the deployment, the crowd, the timeline, and the
//! recording of everything the users saw.

pub mod driver;
pub mod paths;
pub mod progress;
pub mod record;
pub mod recorder;
pub mod timeline;

mod cluster;
mod crowd;
mod net;
