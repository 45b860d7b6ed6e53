//! [`GraphDiff`]: what a swap must do, computed from the running graph and the new one
//! without touching either (vector's `ConfigDiff` is the model). The coordinator applies it
//! (`swap.rs`).

use std::hash::Hash;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tend_model::{GraphSpec, ResSpec};

/// The difference between the running graph, whose vertices are named by keys `K` (the
/// engine's incarnation numbers; indices into the old graph for [`GraphDiff::between`]), and a
/// new graph, whose resources are named by their index in it. Identity is `kind[name]`; two
/// resources with the same identity are the same vertex when their specs are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphDiff<K = usize> {
    /// Running vertices with no resource of their identity in the new graph.
    pub remove: Vec<K>,
    /// Running vertices whose resource changed: (the running vertex, its new spec's index).
    pub change: Vec<(K, usize)>,
    /// Resources of the new graph with no running vertex of their identity.
    pub add: Vec<usize>,
    /// Running vertices whose spec is the same in the new graph: (the vertex, its index).
    pub keep: Vec<(K, usize)>,
}

impl GraphDiff<usize> {
    /// The diff from graph `old` to graph `new`, by index into each.
    pub fn between(old: &GraphSpec, new: &GraphSpec) -> GraphDiff<usize> {
        let mut index: HashMap<(&str, &str), usize> = HashMap::with_capacity(old.resources.len());
        for (i, r) in old.resources.iter().enumerate() {
            index.insert((r.kind.as_str(), r.name.as_str()), i);
        }
        GraphDiff::compute(new, 0..old.resources.len(), |spec| {
            let i = *index.get(&(spec.kind.as_str(), spec.name.as_str()))?;
            Some((i, &old.resources[i]))
        })
    }
}

impl<K: Copy + Eq + Hash> GraphDiff<K> {
    /// The diff from the running vertices `running` to `new`; `find` gives the running
    /// vertex of a resource's identity, with its spec. Every list comes out in order: `add`,
    /// `change` and `keep` in the new graph's order, `remove` in `running`'s.
    pub fn compute<'a>(
        new: &GraphSpec,
        running: impl ExactSizeIterator<Item = K>,
        find: impl Fn(&ResSpec) -> Option<(K, &'a ResSpec)>,
    ) -> GraphDiff<K> {
        let mut d = GraphDiff {
            remove: Vec::new(),
            change: Vec::new(),
            add: Vec::new(),
            keep: Vec::new(),
        };
        if running.len() == 0 {
            // The first graph: nothing to look up.
            d.add = (0..new.resources.len()).collect();
            return d;
        }
        let mut matched: HashSet<K> = HashSet::with_capacity(running.len());
        for (idx, spec) in new.resources.iter().enumerate() {
            match find(spec) {
                Some((k, old)) => {
                    matched.insert(k);
                    if old == spec {
                        d.keep.push((k, idx));
                    } else {
                        d.change.push((k, idx));
                    }
                }
                None => d.add.push(idx),
            }
        }
        d.remove = running.filter(|k| !matched.contains(k)).collect();
        d
    }

    /// The vertices to build, changed and added, in the new graph's order: (index, the
    /// running vertex it replaces).
    pub fn new_vertices(&self) -> impl Iterator<Item = (usize, Option<K>)> + '_ {
        let mut change = self.change.iter().peekable();
        let mut add = self.add.iter().peekable();
        std::iter::from_fn(move || match (change.peek(), add.peek()) {
            (Some(&&(k, c)), Some(&&a)) => {
                if c < a {
                    change.next();
                    Some((c, Some(k)))
                } else {
                    add.next();
                    Some((a, None))
                }
            }
            (Some(&&(k, c)), None) => {
                change.next();
                Some((c, Some(k)))
            }
            (None, Some(&&a)) => {
                add.next();
                Some((a, None))
            }
            (None, None) => None,
        })
    }

    /// Whether the swap changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.change.is_empty() && self.add.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(specs: &[(&str, &str)]) -> GraphSpec {
        GraphSpec {
            resources: specs
                .iter()
                .map(|(n, v)| ResSpec::new("test", *n).param("v", *v))
                .collect(),
            edges: Vec::new(),
        }
    }

    #[test]
    fn sorts_every_resource_into_one_list() {
        let old = g(&[("a", "1"), ("b", "1"), ("c", "1")]);
        let new = g(&[("d", "1"), ("c", "2"), ("a", "1")]);
        let d = GraphDiff::between(&old, &new);
        assert_eq!(d.remove, vec![1]);
        assert_eq!(d.change, vec![(2, 1)]);
        assert_eq!(d.add, vec![0]);
        assert_eq!(d.keep, vec![(0, 2)]);
        assert_eq!(
            d.new_vertices().collect::<Vec<_>>(),
            vec![(0, None), (1, Some(2))]
        );
        assert!(!d.is_empty());
    }

    #[test]
    fn the_same_graph_keeps_everything() {
        let a = g(&[("a", "1"), ("b", "1")]);
        let d = GraphDiff::between(&a, &a);
        assert!(d.is_empty());
        assert_eq!(d.keep, vec![(0, 0), (1, 1)]);
        let first = GraphDiff::between(&GraphSpec::default(), &a);
        assert_eq!(first.add, vec![0, 1]);
        let last = GraphDiff::between(&a, &GraphSpec::default());
        assert_eq!(last.remove, vec![0, 1]);
    }

    #[test]
    fn meta_is_part_of_the_spec() {
        let a = g(&[("a", "1")]);
        let mut b = a.clone();
        b.resources[0].meta.retry = 3;
        assert_eq!(GraphDiff::between(&a, &b).change, vec![(0, 0)]);
    }
}
