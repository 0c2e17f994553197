"""Small embedded schemas for the objects that are not KubeRay CRDs.

``PODMONITOR`` covers the ``monitoring.coreos.com/v1`` PodMonitor fields Cascade
renders (and their common siblings), written from the prometheus-operator API
reference; it is a subset, so any other field is reported as unknown. The real
CRD is not shipped here: apply it with the prometheus-operator (kube-prometheus-
stack). ``CONFIGMAP`` is the core ``v1`` ConfigMap. Both are structural schemas
(same dialect as a CRD's ``openAPIV3Schema``) and go through the same
normalization as the KubeRay CRDs. ``INGRESS`` is the ``networking.k8s.io/v1``
Ingress spec (for ``k8s.security_rules``: an Ingress must not route to the Ray
head's control ports). The core ``v1`` Service and ``networking.k8s.io/v1``
NetworkPolicy schemas come from the KubeRay CRD, which embeds them
(``k8s.validate``).
"""

from __future__ import annotations

from typing import Any

_STR: dict[str, Any] = {"type": "string"}
_STR_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _STR}
_DURATION: dict[str, Any] = {
    "type": "string",
    "pattern": (
        r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
        r"(([0-9]+)ms)?)$"
    ),
}

_RELABEL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {
            "type": "string",
            "default": "replace",
            "enum": [
                "replace",
                "Replace",
                "keep",
                "Keep",
                "drop",
                "Drop",
                "hashmod",
                "HashMod",
                "labelmap",
                "LabelMap",
                "labeldrop",
                "LabelDrop",
                "labelkeep",
                "LabelKeep",
                "lowercase",
                "Lowercase",
                "uppercase",
                "Uppercase",
                "keepequal",
                "KeepEqual",
                "dropequal",
                "DropEqual",
            ],
        },
        "modulus": {"type": "integer", "format": "int64"},
        "regex": _STR,
        "replacement": _STR,
        "separator": _STR,
        "sourceLabels": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"},
        },
        "targetLabel": _STR,
    },
}

_LABEL_SELECTOR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": _STR,
                    "operator": {
                        "type": "string",
                        "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                    },
                    "values": {"type": "array", "items": _STR},
                },
            },
        },
    },
}

PODMONITOR: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "apiVersion": _STR,
        "kind": _STR,
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "properties": {
                "jobLabel": _STR,
                "podTargetLabels": {"type": "array", "items": _STR},
                "sampleLimit": {"type": "integer", "format": "int64", "minimum": 0},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": _STR},
                    },
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "portNumber": {
                                "type": "integer",
                                "format": "int32",
                                "minimum": 1,
                                "maximum": 65535,
                            },
                            "path": _STR,
                            "scheme": {
                                "type": "string",
                                "enum": ["http", "https", "HTTP", "HTTPS"],
                            },
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "params": {
                                "type": "object",
                                "additionalProperties": {"type": "array", "items": _STR},
                            },
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        },
                    },
                },
            },
        },
    },
}

CONFIGMAP: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": _STR,
        "kind": _STR,
        "metadata": {"type": "object"},
        "data": _STR_MAP,
        "binaryData": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": r"^[A-Za-z0-9+/]*={0,2}$"},
        },
        "immutable": {"type": "boolean"},
    },
}

_BACKEND: dict[str, Any] = {
    "type": "object",
    "properties": {
        "service": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _STR,
                "port": {
                    "type": "object",
                    "properties": {
                        "name": _STR,
                        "number": {"type": "integer", "format": "int32"},
                    },
                },
            },
        },
        "resource": {
            "type": "object",
            "properties": {"apiGroup": _STR, "kind": _STR, "name": _STR},
        },
    },
}

# networking.k8s.io/v1 Ingress (the whole spec; status omitted)
INGRESS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": _STR,
        "kind": _STR,
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "ingressClassName": _STR,
                "defaultBackend": _BACKEND,
                "tls": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "hosts": {"type": "array", "items": _STR},
                            "secretName": _STR,
                        },
                    },
                },
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "host": _STR,
                            "http": {
                                "type": "object",
                                "required": ["paths"],
                                "properties": {
                                    "paths": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["pathType", "backend"],
                                            "properties": {
                                                "path": _STR,
                                                "pathType": {
                                                    "type": "string",
                                                    "enum": [
                                                        "Exact",
                                                        "Prefix",
                                                        "ImplementationSpecific",
                                                    ],
                                                },
                                                "backend": _BACKEND,
                                            },
                                        },
                                    }
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
