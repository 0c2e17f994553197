"""cvxpy for strict mypy.

cvxpy ships ``py.typed`` but its top-level namespace re-exports the atoms
(``multiply``, ``vstack``, ``sum`` ...) in a way mypy does not see, and its
operator overloads are typed as numpy's. Modules that build expressions use
``cp`` from here (typed ``Any``) and the classes below for annotations.
"""

from __future__ import annotations

from typing import Any

import cvxpy
from cvxpy import Parameter, Problem, Variable
from cvxpy.constraints.constraint import Constraint
from cvxpy.expressions.expression import Expression

cp: Any = cvxpy

__all__ = ["Constraint", "Expression", "Parameter", "Problem", "Variable", "cp"]
