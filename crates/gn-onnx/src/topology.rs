//! The wiring of a graph's nodes: their topological order (or the cycle that prevents
//! one), the errors of a graph whose values are not all provided, and how a node is named
//! in messages. The graph IR and the model validator both build on it.

use std::collections::HashMap;

use crate::proto::NodeProto;

/// A structural problem in a graph.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("the graph has a cycle through {node}")]
    Cycle { node: String },
    #[error("node '{node}' reads '{value}', which no node, input or initializer provides")]
    MissingInput { node: String, value: String },
    #[error("graph output '{value}' is not produced by any node, input or initializer")]
    MissingOutput { value: String },
}

/// A label for a node in messages: its name, or its op type and index when unnamed.
pub fn node_label(n: &NodeProto, idx: usize) -> String {
    if n.name().is_empty() {
        format!("node #{idx} ({})", n.op_type())
    } else {
        format!("node '{}' ({})", n.name(), n.op_type())
    }
}

/// Indices of `nodes` in topological order, or the cycle found.
pub fn topo_order_of(nodes: &[NodeProto]) -> Result<Vec<usize>, GraphError> {
    let mut producers: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producers.insert(o.as_str(), i);
        }
    }
    let n = nodes.len();
    let mut state = vec![0u8; n]; // 0 = new, 1 = on stack, 2 = done
    let mut order = Vec::with_capacity(n);
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next input index).
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let inputs = &nodes[node].input;
            if *next < inputs.len() {
                let inp = &inputs[*next];
                *next += 1;
                if let Some(&p) = producers.get(inp.as_str()) {
                    match state[p] {
                        0 => {
                            state[p] = 1;
                            stack.push((p, 0));
                        }
                        1 => return Err(GraphError::Cycle { node: node_label(&nodes[p], p) }),
                        _ => {}
                    }
                }
            } else {
                state[node] = 2;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}
