"""Connecting to a MariaDB/MySQL ERP from its `mysql://` (or `mariadb://`) DSN."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql

# Query-string options a DSN may carry, passed on to PyMySQL as they are.
_OPTIONS = {"ssl_ca", "ssl_cert", "ssl_key", "unix_socket", "connect_timeout", "read_timeout", "write_timeout"}
_INT_OPTIONS = {"connect_timeout", "read_timeout", "write_timeout"}


def parse_dsn(dsn: str) -> dict[str, Any]:
    """PyMySQL connection settings from `mysql://user:password@host:port/database?option=value`."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ValueError(f"erp.dsn: expected a mysql:// or mariadb:// URL, got scheme {parts.scheme!r}")
    settings: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    database = parts.path.lstrip("/")
    if database:
        settings["database"] = unquote(database)
    for name, value in parse_qsl(parts.query):
        if name not in _OPTIONS:
            raise ValueError(f"erp.dsn: unknown option {name!r}; known: {', '.join(sorted(_OPTIONS))}")
        settings[name] = int(value) if name in _INT_OPTIONS else value
    return settings


def connect(dsn: str, **overrides: Any) -> pymysql.connections.Connection[Any]:
    """An autocommit connection whose session reads TIMESTAMP columns in UTC."""
    settings = {"connect_timeout": 10, **parse_dsn(dsn), **overrides}
    return pymysql.connect(
        **settings,
        autocommit=True,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
    )
