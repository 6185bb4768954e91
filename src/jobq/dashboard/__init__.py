"""The web dashboard at ``/ui``: server-rendered pages over the queue, with its actions."""

from .auth import Action, DashboardAuth, Identity, allowed_actions
from .routes import install_dashboard, set_key_resolver

__all__ = [
    "Action",
    "DashboardAuth",
    "Identity",
    "allowed_actions",
    "install_dashboard",
    "set_key_resolver",
]
