//! The cost of each expression, as cel-go's coster walks it: literals, selections,
//! constructors, calls (their arguments' and the function's, see `functions`) and
//! comprehensions with their iteration counts.

use super::*;

impl<'d> Coster<'d> {
    pub(super) fn cost(&mut self, e: &IdedExpr) -> Range {
        match &e.expr {
            Expr::Literal(_) => Range::fixed(0),
            Expr::Ident(name) => {
                let path = match self.locals.get(name).and_then(|l| l.last()) {
                    Some(local) => local.path.clone(),
                    None => Some(vec![name.clone()]),
                };
                self.paths.insert(e.id, path);
                Range::fixed(SELECT_AND_IDENT)
            }
            Expr::Select(sel) => {
                if sel.test {
                    // The API server's environment: has() costs nothing of its own.
                    return self.cost(&sel.operand);
                }
                let mut sum = self.cost(&sel.operand);
                if matches!(self.ty(&sel.operand), Ty::Object(_) | Ty::Map(..)) {
                    sum = sum.add(Range::fixed(SELECT_AND_IDENT));
                }
                let path = self.path(&sel.operand).map(|mut p| {
                    p.push(sel.field.clone());
                    p
                });
                self.paths.insert(e.id, path);
                sum
            }
            Expr::Call(call) => self.cost_call(e, &qualified(call)),
            Expr::List(list) => {
                let mut sum = Range::fixed(0);
                let mut item = if list.elements.is_empty() {
                    Range { min: 0, max: 0 }
                } else {
                    Range {
                        min: u64::MAX,
                        max: 0,
                    }
                };
                for el in &list.elements {
                    sum = sum.add(self.cost(el));
                    let size = self.size_or_unknown(el);
                    item = item.union(size);
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        val: item,
                    },
                );
                sum.add(Range::fixed(LIST_CREATE))
            }
            Expr::Map(map) => {
                let mut sum = Range::fixed(0);
                let empty = map.entries.is_empty();
                let mut key = Range {
                    min: if empty { 0 } else { u64::MAX },
                    max: 0,
                };
                let mut val = key;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        sum = sum.add(self.cost(&m.key)).add(self.cost(&m.value));
                        let k = self.size_or_unknown(&m.key);
                        let v = self.size_or_unknown(&m.value);
                        key = key.union(k);
                        val = val.union(v);
                    }
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: false,
                        key,
                        val,
                    },
                );
                sum.add(Range::fixed(MAP_CREATE))
            }
            Expr::Struct(s) => {
                let mut sum = Range::fixed(STRUCT_CREATE);
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        sum = sum.add(self.cost(&f.value));
                    }
                }
                sum
            }
            Expr::Comprehension(comp) => {
                if is_bind(comp) {
                    self.cost_bind(e, comp)
                } else {
                    self.cost_comprehension(e, comp)
                }
            }
            _ => Range::fixed(0),
        }
    }

    pub(super) fn cost_comprehension(&mut self, e: &IdedExpr, comp: &ComprehensionExpr) -> Range {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let accu_local = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry: self.entry_size(&comp.accu_init),
        };
        self.push_local(&comp.accu_var, accu_local);
        let range_entry = self.entry_size(&comp.iter_range);
        let range_path = self.path(&comp.iter_range).unwrap_or_default();
        let container_list = match range_entry {
            Some(entry) => entry.list,
            None => self.ty(&comp.iter_range).is_list(),
        };
        let with = |suffix: &str| {
            let mut p = range_path.clone();
            p.push(suffix.to_string());
            Some(p)
        };
        match &comp.iter_var2 {
            Some(v2) => {
                let (ks, kp) = if container_list {
                    ("@indices", "@indices")
                } else {
                    ("@keys", "@keys")
                };
                let _ = ks;
                self.push_local(
                    &comp.iter_var,
                    Local {
                        path: with(kp),
                        size: range_entry.map(|r| r.key),
                        entry: None,
                    },
                );
                let vp = if container_list { "@items" } else { "@values" };
                self.push_local(
                    v2,
                    Local {
                        path: with(vp),
                        size: range_entry.map(|r| r.val),
                        entry: None,
                    },
                );
            }
            None => {
                let (size, sub) = if container_list {
                    (range_entry.map(|r| r.val), "@items")
                } else {
                    (range_entry.map(|r| r.key), "@keys")
                };
                self.push_local(
                    &comp.iter_var,
                    Local {
                        path: with(sub),
                        size,
                        entry: None,
                    },
                );
            }
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        self.pop_local(&comp.iter_var);
        if let Some(v2) = &comp.iter_var2 {
            self.pop_local(v2);
        }
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        let count = self.size_or_unknown(&comp.iter_range);
        sum = sum.add(count.multiply(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&comp.accu_init) {
                    self.sizes.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(e.id, count);
                if let Some(entry) = self.entry_size(&comp.loop_step) {
                    self.entries.insert(e.id, entry);
                }
            }
            _ => {}
        }
        sum
    }

    pub(super) fn cost_bind(&mut self, e: &IdedExpr, comp: &ComprehensionExpr) -> Range {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let local = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry: self.entry_size(&comp.accu_init),
        };
        self.push_local(&comp.accu_var, local);
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        if let Some(size) = self.compute_size(&comp.result) {
            self.sizes.insert(e.id, size);
        }
        if let Some(entry) = self.entry_size(&comp.result) {
            self.entries.insert(e.id, entry);
        }
        sum
    }

    pub(super) fn cost_call(&mut self, e: &IdedExpr, call: &CallExpr) -> Range {
        if call.func_name == "dyn" && call.args.len() == 1 {
            let cost = self.cost(&call.args[0]);
            if let Some(size) = self.compute_size(&call.args[0]) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(&call.args[0]) {
                self.entries.insert(e.id, entry);
            }
            return Range::fixed(1).add(cost);
        }
        let arg_costs: Vec<Range> = call.args.iter().map(|a| self.cost(a)).collect();
        let mut sum = Range::fixed(0);
        if let Some(target) = &call.target {
            sum = sum.add(self.cost(target));
        }
        let (cost, result_size) = self.function_cost(e, call, &arg_costs);
        let mut result_size = result_size;
        match (
            call.func_name.as_str(),
            self.ty(&call.args.first().cloned().unwrap_or_default()),
        ) {
            ("_[_]", Ty::List(_)) => {
                result_size = self.entry_size(&call.args[0]).map(|r| r.val);
                let path = self.path(&call.args[0]).map(|mut p| {
                    p.push("@items".into());
                    p
                });
                self.paths.insert(e.id, path);
            }
            ("_[_]", Ty::Map(..)) => {
                result_size = self.entry_size(&call.args[0]).map(|r| r.val);
                let path = self.path(&call.args[0]).map(|mut p| {
                    p.push("@values".into());
                    p
                });
                self.paths.insert(e.id, path);
            }
            _ => {}
        }
        let result_size = result_size.or_else(|| self.compute_size(e));
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        sum.add(cost)
    }
}

/// `cel.bind`: a comprehension over an empty list whose loop never runs.
pub(super) fn is_bind(comp: &ComprehensionExpr) -> bool {
    matches!(&comp.iter_range.expr, Expr::List(l) if l.elements.is_empty())
        && matches!(&comp.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if !*b.inner())
        && !is_accumulator(&comp.accu_var)
}
