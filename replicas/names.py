"""Where the controller actor is found: its name and Ray namespace.

In a module of their own so that the controller actor's process, which needs
only these two strings from the replica side, does not import Ray Serve LLM and
vLLM (``replicas.deployment``) to get them: that import costs tens of seconds on
a small host, and the controller pays it at every start and restart.
"""

CONTROLLER_NAME = "cascade-controller"
CONTROLLER_NAMESPACE = "cascade"
