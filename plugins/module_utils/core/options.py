# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options, each defined once: name and aliases, type, default, allowed
values, environment fallbacks, drkit flags, and whether it is a secret.

An ``Option`` lives with what it describes, in the lowest layer that owns it
(the storage options in storage/factory.py, the PostgreSQL connection in
pg/client.py, compression in core/stream.py, each command's own options in
its file), and a command's ``OPTIONS`` is an ``Options`` made of them. Three
readers use the same records:

* ``resolve(OPTIONS, params)``, called once at the top of every engine entry
  point: aliases folded into the option's name, unset values filled from the
  environment and then the default, values coerced to the option's type and
  checked against its choices and range. A bad value raises ConfigError
  naming the option, the value (never a secret's) and what is allowed.
* ``_ansible.argument_spec(OPTIONS)``: the module's argument_spec (type,
  default, choices, aliases, no_log, env fallback, elements).
* ``cli.add_options(parser, OPTIONS)``: the ``drkit`` flags. Secrets never
  get a flag (they would show in the process list).

Ranges are drkit's own rule (Ansible's argument_spec has no min/max): the
modules pass their values through ``resolve`` like the command line does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os

from .errors import ConfigError

TYPES = ("str", "path", "int", "float", "bool", "list", "dict", "raw")
TRUE = ("yes", "on", "1", "true", "y", "t")
FALSE = ("no", "off", "0", "false", "n", "f")
_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "list": "a list",
          "dict": "a mapping", "str": "a string", "path": "a path"}


def comma_split(text):
    """How Ansible turns a string into a list: split at commas."""
    return [part.strip() for part in text.split(",") if part.strip()]


class Option(object):
    """One option of one or more commands.

    type      str, path, int, float, bool, list, dict or raw
    default   the value when neither the caller nor the environment sets one
    choices   allowed values (of each element for a list)
    min, max  inclusive bounds of an int or float; ``above``: exclusive lower bound
    allowed   how to say the range in a message, when the bounds alone say it badly
              (keep_daily: "0 or more, or -1 for unlimited")
    elements  type of a list's elements
    aliases   other names (also accepted as config-file keys)
    env       environment variables tried in order when the option is unset
    secret    no_log in the module, never a flag, never in a message
    no_log    the module's no_log when it is not a secret (False silences
              Ansible's warning for names like tls_key)
    required  the module's ``required``; the engine says itself what is
              missing, with a hint
    module    False: not a module option, only a key of the drkit config
              file (or a flag); the module leaves it at its default
    flags     drkit flags (for a bool: flags that set true); ``off_flags``:
              flags that set a bool false
    split     for a list given as one string: how to split it (default: at
              commas, as Ansible does); with ``split``, the flag takes one
              string instead of being repeatable
    help      short help of the flag; ``hint``: what to do when the value is bad
    """

    def __init__(self, name, type="str", default=None, choices=None, min=None, max=None, above=None,
                 allowed=None, elements=None, aliases=(), env=(), secret=False, no_log=None, required=False,
                 module=True, flags=(), off_flags=(), split=None, metavar=None, help=None, hint=None):
        if type not in TYPES:
            raise ValueError("option %s: unknown type %r" % (name, type))
        if secret and (flags or off_flags):
            raise ValueError("option %s is a secret: secrets never get a command-line flag" % name)
        if off_flags and type != "bool":
            raise ValueError("option %s: off_flags are for bool options" % name)
        self.name = name
        self.type = type
        self.default = default
        self.choices = tuple(choices) if choices else None
        self.min = min
        self.max = max
        self.above = above
        self._allowed = allowed
        self.elements = elements
        self.aliases = tuple(aliases)
        self.env = tuple(env)
        self.secret = bool(secret)
        self.no_log = True if secret else no_log
        self.required = bool(required)
        self.module = bool(module)
        self.flags = tuple(flags)
        self.off_flags = tuple(off_flags)
        self.split = split
        self.metavar = metavar
        self.help = help
        self.hint = hint

    _FIELDS = ("type", "default", "choices", "min", "max", "above", "allowed", "elements", "aliases", "env",
               "secret", "no_log", "required", "module", "flags", "off_flags", "split", "metavar", "help", "hint")

    def but(self, name=None, **changes):
        """A copy with some fields changed: the same option with another
        default or help in one command (the type and range stay), or under
        another ``name`` (a second storage's options, to_*)."""
        fields = dict((f, getattr(self, "_allowed" if f == "allowed" else f)) for f in self._FIELDS)
        if fields["secret"]:
            fields["no_log"] = None
        fields.update(changes)
        return Option(name or self.name, **fields)

    def __repr__(self):
        return "Option(%r, %r)" % (self.name, self.type)

    # ------------------------------------------------------------------

    @property
    def names(self):
        return (self.name,) + self.aliases

    def allowed(self):
        """The allowed values in words: "1-19", "at least 1", "one of a, b"."""
        if self._allowed:
            return self._allowed
        if self.choices:
            return "one of %s" % ", ".join(str(c) for c in self.choices)
        low = self.min
        if low is not None and self.max is not None:
            return ("%s-%s" if low >= 0 else "%s to %s") % (low, self.max)
        parts = []
        if low is not None:
            parts.append("at least %s" % low)
        if self.above is not None:
            parts.append("more than %s" % self.above)
        if self.max is not None:
            parts.append("at most %s" % self.max)
        return " and ".join(parts) if parts else _KINDS.get(self.type, "any value")

    def _hint(self):
        if self.hint:
            return self.hint
        if self.default is not None and not isinstance(self.default, (list, dict)):
            default = str(self.default).lower() if isinstance(self.default, bool) else self.default
            return "Use %s, or leave %s unset for the default %s" % (self.allowed(), self.name, default)
        return "Use %s" % self.allowed()

    def _refuse(self, value, what=None):
        message = "%s must be %s" % (self.name, what or self.allowed())
        if not self.secret:
            message += ", got %r" % (value,)
        return ConfigError(message, self._hint())

    def check(self, value):
        """``value`` coerced to this option's type and checked; ConfigError
        if it cannot be. None stays None (unset)."""
        if value is None:
            return None
        value = self._coerce(self.type, value)
        if self.type == "list":
            value = [self._coerce(self.elements, v) for v in value] if self.elements else value
            items = value
        else:
            items = [value]
        if self.choices:
            for item in items:
                if item not in self.choices:
                    raise self._refuse(value if self.type != "list" else item)
        if self.type in ("int", "float"):
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max) \
                    or (self.above is not None and value <= self.above):
                raise self._refuse(value)
        return value

    def _coerce(self, kind, value):
        if kind in (None, "raw"):
            return value
        if kind in ("str", "path"):
            if isinstance(value, (list, tuple, dict)):
                raise self._refuse(value, _KINDS[kind])
            value = value if isinstance(value, str) else str(value)
            return os.path.expanduser(os.path.expandvars(value)) if kind == "path" else value
        if kind == "int":
            if isinstance(value, bool):
                raise self._refuse(value, _KINDS[kind])
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int):
                return value
            try:
                return int(str(value).strip())
            except ValueError:
                raise self._refuse(value, _KINDS[kind])
        if kind == "float":
            if isinstance(value, bool):
                raise self._refuse(value, _KINDS[kind])
            try:
                number = float(value if isinstance(value, (int, float)) else str(value).strip())
            except ValueError:
                raise self._refuse(value, _KINDS[kind])
            if math.isnan(number):  # nan passes every comparison
                raise self._refuse(value, _KINDS[kind])
            return number
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            raise self._refuse(value, _KINDS[kind])
        if kind == "list":
            if isinstance(value, (list, tuple)):
                return list(value)
            if isinstance(value, str):
                return (self.split or comma_split)(value)
            if isinstance(value, dict):
                raise self._refuse(value, _KINDS[kind])
            return [value]
        if kind == "dict":
            if isinstance(value, dict):
                return dict(value)
            raise self._refuse(value, _KINDS[kind])
        raise ValueError(kind)

    def default_value(self):
        """The default, of the option's type (300 for a float is 300.0) and a
        fresh object (a list or dict default is never shared)."""
        if isinstance(self.default, (list, dict)):
            return type(self.default)(self.default)
        return self._coerce(self.type, self.default) if self.default is not None else None


class Options(object):
    """The options of one command, in order: made of Option records and
    groups of them (tuples, lists or other Options)."""

    def __init__(self, *parts):
        self._items = []
        self._by_name = {}
        for part in parts:
            for opt in ([part] if isinstance(part, Option) else part):
                for n in opt.names:
                    if n in self._by_name:
                        raise ValueError("option name %s is given twice" % n)
                    self._by_name[n] = opt
                self._items.append(opt)

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __contains__(self, name):
        return name in self._by_name

    def __getitem__(self, name):
        """The option of a name or alias."""
        return self._by_name[name]

    def names(self):
        return [o.name for o in self._items]


def from_environment(opt, environ=None):
    """The first non-empty environment variable of an option's fallbacks."""
    environ = os.environ if environ is None else environ
    for var in opt.env:
        if environ.get(var):
            return environ[var]
    return None


def fold_aliases(options, params):
    """``params`` with each alias key renamed to its option's name (for a
    config file, before flags are laid over it); an option set under two
    names to different values is an error."""
    out = dict(params or {})
    for opt in options:
        for alias in opt.aliases:
            if alias not in out:
                continue
            value = out.pop(alias)
            if out.get(opt.name) is not None and value is not None and out[opt.name] != value:
                what = "" if opt.secret else " (%r and %r)" % (out[opt.name], value)
                raise ConfigError("%s and %s are the same option and both set, to different values%s" % (
                    opt.name, alias, what), "Set only %s" % opt.name)
            if out.get(opt.name) is None:
                out[opt.name] = value
    return out


def _given(opt, params):
    """The value the caller set, under the option's name or an alias; both
    set to different values is an error."""
    found = [(n, params[n]) for n in opt.names if params.get(n) is not None]
    if opt.type not in ("str", "path", "raw"):
        found = [(n, v) for n, v in found if v != ""]  # an empty string does not set a number or a flag
    if not found:
        return None
    value = opt.check(found[0][1])
    for other, raw in found[1:]:
        if opt.check(raw) != value:
            what = "" if opt.secret else " (%r and %r)" % (found[0][1], raw)
            raise ConfigError("%s and %s are the same option and both set, to different values%s" % (
                found[0][0], other, what), "Set only %s" % opt.name)
    return value


def resolve(options, params, environ=None):
    """``params`` with every option of ``options`` set: the caller's value
    (under the option's name or an alias), else the first environment
    fallback, else the default; coerced and checked. Aliases are folded into
    the option's name. Keys that are not options pass through unchanged (one
    drkit config file serves a job's backup, verify and rotate commands).

    Calling it again on its own result returns the same dict, so a helper
    that resolves its own group (pg.client.conn_params) may be handed
    resolved parameters."""
    out = dict(params or {})
    for opt in options:
        value = _given(opt, out)
        if value is None:
            value = opt.check(from_environment(opt, environ))
        if value is None:
            value = opt.default_value()
        for alias in opt.aliases:
            out.pop(alias, None)
        out[opt.name] = value
    return out
