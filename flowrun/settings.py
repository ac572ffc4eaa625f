"""Settings read from the environment, and where flowrun's packaged resources are.

Pure: no Docker, no broker. Every layer may read these.
"""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
PACKAGE_DIR = Path(__file__).resolve().parent
# What goes into images beside a component: the sailor (every Python step) or the
# platform services (their own image), each with the contract they share.
CONTRACT_DIR = PACKAGE_DIR / "contract"
SAILOR_DIR = PACKAGE_DIR / "sailor"
SERVICES_DIR = PACKAGE_DIR / "services"
MAPPER_COMPONENT_DIR = RESOURCES / "mapper"

DEFAULT_BASE_IMAGE = "flowrun/python-base:bookworm"
DEFAULT_BROKER_IMAGE = "flowrun/rabbitmq:bookworm"
DEFAULT_NODE_IMAGE = "flowrun/node-base:bookworm"


def base_image() -> str:
    return os.environ.get("FLOWRUN_BASE_IMAGE", DEFAULT_BASE_IMAGE)


def node_base_image() -> str:
    """The base of Node.js component images: Debian's nodejs, no npm."""
    return os.environ.get("FLOWRUN_NODE_IMAGE", DEFAULT_NODE_IMAGE)


def node_dockerfile_path() -> Path:
    """The template every Node.js component image is built from."""
    return RESOURCES / "Dockerfile.node"


def broker_image() -> str:
    return os.environ.get("FLOWRUN_BROKER_IMAGE", DEFAULT_BROKER_IMAGE)


def dockerfile_path() -> Path:
    """The template every component image is built from; shipped inside the package
    (the repository's top-level Dockerfile.component is a link to it)."""
    override = os.environ.get("FLOWRUN_DOCKERFILE")
    return Path(override) if override else RESOURCES / "Dockerfile.component"


def services_dockerfile_path() -> Path:
    """The platform services' image template."""
    return RESOURCES / "Dockerfile.services"


DEFAULT_GATEWAY_PORT = 9080


def gateway_port() -> int:
    """The host's loopback port for flows called over HTTP (`/hook/<flow>`);
    FLOWRUN_GATEWAY_PORT chooses another (0: any free port)."""
    value = os.environ.get("FLOWRUN_GATEWAY_PORT", "")
    return int(value) if value.isdigit() and int(value) < 65536 else DEFAULT_GATEWAY_PORT


def cache_dir() -> Path:
    root = os.environ.get("FLOWRUN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "flowrun" if root else Path.home() / ".cache" / "flowrun"
