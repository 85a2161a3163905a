"""Memory planning: every intermediate gets a slot in a per-dtype arena, allocated once.

Sizes are linear in the batch size n (every None dimension is n), so a plan is a set of
(coefficient of n, constant) pairs and one plan serves every batch size. Slots are reused
once their last reader has run; views (reshape) share their source's slot and extend
its lifetime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALIGN = 16  # elements; keeps every slot 64-byte aligned for float32


@dataclass
class Buffer:
    dtype: str
    slot: int
    offset: tuple  # (coefficient of n, constant), in elements
    size: tuple  # (coefficient of n, constant), in elements


@dataclass
class MemoryPlan:
    buffers: dict  # node id -> Buffer
    aliases: dict  # view node id -> node id whose buffer it reads
    arena_sizes: dict  # dtype -> (coefficient of n, constant)
    in_place: dict = field(default_factory=dict)  # value id -> variable node id it overwrites

    def arena_elements(self, dtype, batch):
        coefficient, constant = self.arena_sizes[dtype]
        return coefficient * batch + constant


def linear_size(shape):
    """(a, b) with size = a*n + b for a shape whose None dims are n (at most one None)."""
    known = 1
    unknown = 0
    for d in shape:
        if d is None:
            unknown += 1
        else:
            known *= d
    if unknown > 1:
        raise NotImplementedError(f"memory plan: shape {shape} has {unknown} unknown dimensions; "
                                  "only the batch dimension may be unknown")
    return (known, 0) if unknown else (0, known)


def _round(value):
    return -(-value // ALIGN) * ALIGN


def plan_in_place_updates(graph, groups):
    """{value id: variable node id} for state updates computed straight into the variable.

    An elementwise group may write a variable's new value over the old one when every
    other reader of the old value runs in an earlier group, and readers inside the group
    read it at the same index (the loop reads all inputs of an element before it stores).
    This saves a buffer and a copy per variable per step (Adam's W, m and v).
    """
    group_index = {node_id: i for i, group in enumerate(groups) for node_id in group.nodes}
    outputs = set(graph.outputs)
    in_place, taken = {}, set()
    for var_id, value_id in graph.state_updates.items():
        index = group_index.get(value_id)
        if index is None or value_id in taken or var_id in outputs:
            continue
        group = groups[index]
        variable, value = graph.node(var_id), graph.node(value_id)
        if group.kind != "elementwise" or value.shape != variable.shape or value.dtype != variable.dtype:
            continue
        if graph.node(group.output).shape != variable.shape:
            continue
        readers = graph.consumers(var_id)
        if any(graph.node(r).op == "reshape" for r in readers):
            continue
        if all(group_index.get(r, index) < index or r in group.nodes for r in readers):
            in_place[value_id] = var_id
            taken.add(value_id)
    return in_place


def plan_memory(graph, groups):
    """Assign arena slots to group results that need storage of their own."""
    in_place = plan_in_place_updates(graph, groups)
    aliases = {}
    for group in groups:
        if group.kind == "view":
            source = graph.node(group.output).inputs[0]
            aliases[group.output] = aliases.get(source, source)
    last_use = {}
    for index, group in enumerate(groups):
        for src in group.inputs:
            last_use[aliases.get(src, src)] = index
    end = len(groups)
    for root in graph.roots():
        last_use[aliases.get(root, root)] = end

    slots = {}  # dtype -> list of [coefficient, constant]
    free = {}  # dtype -> slot indices free now
    owner_end = []  # (last use, dtype, slot)
    assignment = {}
    for index, group in enumerate(groups):
        for item in [o for o in owner_end if o[0] < index]:
            owner_end.remove(item)
            free.setdefault(item[1], []).append(item[2])
        if group.kind == "view":
            continue
        for output in group.outputs:
            if output in in_place:
                continue
            node = graph.node(output)
            coefficient, constant = linear_size(node.shape)
            size = (_round(coefficient), _round(max(constant, 1)))
            dtype = node.dtype
            candidates = free.get(dtype, [])
            choice = None
            for slot in candidates:  # prefer a free slot that is already big enough
                current = slots[dtype][slot]
                if current[0] >= size[0] and current[1] >= size[1]:
                    choice = slot
                    break
            if choice is None and candidates:
                choice = candidates[0]
            if choice is None:
                slots.setdefault(dtype, []).append([0, 0])
                choice = len(slots[dtype]) - 1
            else:
                candidates.remove(choice)
            slot_size = slots[dtype][choice]
            slot_size[0], slot_size[1] = max(slot_size[0], size[0]), max(slot_size[1], size[1])
            assignment[output] = (dtype, choice, size)
            owner_end.append((last_use.get(output, index), dtype, choice))

    offsets, arena_sizes = {}, {}
    for dtype, sizes in slots.items():
        coefficient = constant = 0
        for slot, (a, b) in enumerate(sizes):
            offsets[dtype, slot] = (coefficient, constant)
            coefficient, constant = coefficient + a, constant + b
        arena_sizes[dtype] = (coefficient, constant)
    buffers = {node_id: Buffer(dtype, slot, offsets[dtype, slot], size)
               for node_id, (dtype, slot, size) in assignment.items()}
    return MemoryPlan(buffers, aliases, arena_sizes, in_place)
