//! [`Resolver`]: a recipe being planned and the folder its paths resolve against. A leaf:
//! each part of the plan adds its methods in its own file (`super::paths` the paths,
//! `super::daemons` the bundle's policies, ...).

use std::path::Path;

use crate::recipe::Recipe;

pub(super) struct Resolver<'a> {
    pub(super) recipe: &'a Recipe,
    pub(super) root: &'a Path,
}
