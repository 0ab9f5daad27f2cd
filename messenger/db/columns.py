"""SELECT lists that render a wire shape: the shape's keys in their declared order."""

from collections.abc import Mapping, Sequence


def select_list(keys: Sequence[str], expressions: Mapping[str, str]) -> str:
    """`expression AS key, ...` for every key of a shape (schemas), in the shape's order.

    Every key needs an expression and every expression a key, so a shape and the statement
    that renders it cannot drift apart: the module fails to import instead.
    """
    if set(keys) != set(expressions):
        raise ValueError(f"keys {sorted(keys)} and expressions {sorted(expressions)} differ")
    return ", ".join(f"{expressions[key]} AS {key}" for key in keys)
