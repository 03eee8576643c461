"""The errors of restore drills, and reading a stored drill policy."""

from __future__ import annotations

from safehold.core.drill import DrillPolicy, parse_drill_policy
from safehold.core.errors import ConflictError, NotFoundError
from safehold.service.uow import UnitOfWork

__all__ = [
    "DrillNotEnabled",
    "DrillNotFound",
    "DrillPolicyExists",
    "DrillPolicyInUse",
    "DrillPolicyNotFound",
    "load_policy",
]


class DrillPolicyNotFound(NotFoundError):
    """No drill policy has this name."""

    code = "SAFEHOLD_E_DRILL_POLICY_NOT_FOUND"


class DrillNotFound(NotFoundError):
    """No drill has this id."""

    code = "SAFEHOLD_E_DRILL_NOT_FOUND"


class DrillNotEnabled(NotFoundError):
    """No drill policy applies to this partition (and none was named)."""

    code = "SAFEHOLD_E_DRILL_NOT_ENABLED"


class DrillPolicyExists(ConflictError):
    """A drill policy with this name exists already."""

    code = "SAFEHOLD_E_DRILL_POLICY_EXISTS"


class DrillPolicyInUse(ConflictError):
    """The drill policy is still attached somewhere."""

    code = "SAFEHOLD_E_DRILL_POLICY_IN_USE"


def load_policy(uow: UnitOfWork, name: str) -> DrillPolicy:
    """
    Read drill policy *name*.

    Raises:
        DrillPolicyNotFound: there is none.
    """
    doc = uow.drills.get_policy(name)
    if doc is None:
        raise DrillPolicyNotFound(f"drill policy {name!r} does not exist")
    return parse_drill_policy(doc)
