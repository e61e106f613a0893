# -*- coding: utf-8 -*-
# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drkit version (the collection's galaxy.yml version)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


VERSION = "0.1.0"
