# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``item_errors``: what is wrong with the dict items of a role's list
variable, checked against the item options of the role's own
meta/argument_specs.yml by Ansible's ArgumentSpecValidator.

Ansible validates ``type: list, elements: dict`` options itself before a role
runs; it cannot validate a list whose items may also be plain strings
(``elements: raw``, as postgresql_backup_databases takes names or dicts), and
it never says which valid key a typo was meant to be. The roles' preflight
asserts that this filter returns no message.

Docs: item_errors.yml beside this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.errors import UnsupportedError


def _spec_at(options, path):
    """The options at a nested key path (unsupported names come as tuples)."""
    for key in path:
        options = (options.get(key) or {}).get("options") or {}
    return options


def _unknown_key(name, index, path, options):
    where = "%s[%d]%s" % (name, index, "".join(".%s" % p for p in path[:-1]))
    valid = sorted(_spec_at(options, path[:-1]))
    close = difflib.get_close_matches(path[-1], valid, n=1, cutoff=0.6)
    hint = (" (did you mean %s?)" % close[0]) if close else ""
    return "%s: unknown key %r%s; valid keys: %s" % (where, path[-1], hint, ", ".join(valid))


def item_errors(items, options, name="items"):
    """One message per problem in the dict items of ``items``: unknown keys
    (with the nearest valid key), values of the wrong type or not among the
    choices, missing required keys. Items that are not dicts are left to the
    caller (a string may be a valid short form)."""
    if not isinstance(options, dict):
        raise AnsibleFilterError("item_errors: options must be the item options of an argument spec")
    if items is None:
        return []
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        return ["%s must be a list, not %s" % (name, type(items).__name__)]
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        result = ArgumentSpecValidator(options).validate(dict(item))
        for path in sorted(result.unsupported_parameters, key=str):
            out.append(_unknown_key(name, index, path if isinstance(path, tuple) else (path,), options))
        for error in result.errors.errors:
            if not isinstance(error, UnsupportedError):
                out.append("%s[%d]: %s" % (name, index, to_native(error.msg)))
    return out


class FilterModule(object):
    def filters(self):
        return {"item_errors": item_errors}
