// Several Keyward instances on one database (issue 3): one truth, whatever instance answers.

#[allow(unused_imports)]
use super::kit::*;
