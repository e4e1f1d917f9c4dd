#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: syn2mas_runtime
short_description: Find the Python, pg_dump and pg_restore the database work needs on a Synapse host
version_added: 0.2.0
description:
  - The other modules of this collection that touch a database need a Python with psycopg2 and PyYAML on the
    host. Debian's C(/usr/bin/python3) usually has neither, but Synapse's own interpreter always has both when
    Synapse uses PostgreSQL. This module finds such an interpreter, so a play can run its later modules with it
    (set C(ansible_python_interpreter) to RV(python)).
  - 'It tries, in this order, each reported with where it came from: the interpreters given in O(python); the
    interpreter of each running Synapse main process and worker (C(synapse.app.homeserver),
    C(synapse.app.generic_worker), read from C(/proc) as started, so a virtualenv''s C(bin/python) stays the
    virtualenv''s); the C(ExecStart) of the O(synapse_units) (through C(systemctl), when there is one); Debian''s
    package layout C(/opt/venvs/matrix-synapse/bin/python); the interpreter running this module. Each is run
    once to learn its version and which libraries import. The first with Python 3.8 or newer and every
    library of O(libraries) is chosen.'
  - Also finds C(pg_dump) and C(pg_restore) (in O(pg_bindir), else on C(PATH), else in the newest
    C(/usr/lib/postgresql/*/bin)) with their versions, and reports the running Synapse processes with the
    configuration files and directories they read (their C(--config-path) arguments).
  - Needs nothing but Python's standard library, so it runs on any interpreter the inventory names.
  - Only reads; reports C(changed=false).
options:
  python:
    description:
      - Interpreters to try first, in order (paths, or names looked up on C(PATH)).
    type: list
    elements: path
    default: []
  discover:
    description:
      - Also try the interpreters found on the host (running Synapse, systemd units, Debian's layout, this
        module's own).
      - V(false) tries only O(python), so that an interpreter the operator gave is used or the module fails;
        the Synapse processes and units are reported either way.
    type: bool
    default: true
  synapse_units:
    description: The systemd units that run Synapse, whose C(ExecStart) names its interpreter.
    type: list
    elements: str
    default: [matrix-synapse.service]
  synapse_config:
    description:
      - Synapse's configuration files as the runbook knows them. A running Synapse that reads one of them (as a
        file, or from a directory it reads) is listed, and its interpreter tried, before other Synapse
        processes on the same host.
    type: list
    elements: path
    default: []
  synapse_python:
    description:
      - Synapse's own Python, when it is not the interpreter this module chooses (the operator gave one for the
        database work). RV(synapse_version) is then the matrix-synapse release it has installed.
    type: path
  libraries:
    description: The Python libraries (import names) the chosen interpreter must have.
    type: list
    elements: str
    choices: [psycopg2, yaml, ruamel.yaml]
    default: [psycopg2, yaml]
  pg_bindir:
    description: The directory of C(pg_dump) and C(pg_restore). When not set, C(PATH), then the newest
      C(/usr/lib/postgresql/*/bin).
    type: path
  fail_on_missing:
    description:
      - Fail when no interpreter fits, or C(pg_dump) or C(pg_restore) is missing, with the messages of
        RV(missing). V(false) only reports.
    type: bool
    default: true
notes:
  - Run as a user that may read other users' C(/proc/PID/cwd) and C(environ) (root, with C(become)) to
    resolve a Synapse started with a relative interpreter path; otherwise such a process is reported with
    RV(synapse_processes[].interpreter=null).
extends_documentation_fragment:
  - matrix.syn2mas.read_only
author:
  - syn2mas maintainers (@matrix-syn2mas)
"""

EXAMPLES = r"""
- name: Find the Python with psycopg2 and PyYAML, pg_dump and pg_restore
  matrix.syn2mas.syn2mas_runtime:
    synapse_config: [/etc/matrix-synapse/homeserver.yaml]
  register: runtime

- name: Run the later modules of this host with that Python
  ansible.builtin.set_fact:
    ansible_python_interpreter: "{{ runtime.python }}"

- name: Use Synapse's own virtualenv, or fail naming what it lacks
  matrix.syn2mas.syn2mas_runtime:
    python: [/opt/venvs/matrix-synapse/bin/python]
    discover: false
"""

RETURN = r"""
python:
  description: The chosen interpreter, as tried (not resolved further), or null when none fits.
  returned: always
  type: str
  sample: /opt/venvs/matrix-synapse/bin/python
synapse_version:
  description: The matrix-synapse version installed for O(synapse_python) when given, else for the chosen interpreter
    (the Synapse it runs); null when it has none.
  returned: always
  type: str
  sample: 1.163.2
candidates:
  description: Each interpreter tried, in order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The interpreter.
      type: str
    source:
      description: Where it came from - C(given), C(Synapse process PID (main|worker)), C(systemd unit UNIT),
        C(Debian package layout), C(this module's interpreter).
      type: str
    exists:
      description: Whether the file exists.
      type: bool
    version:
      description: Its Python version, when it ran.
      type: str
    libraries:
      description: Each library (psycopg2, yaml, ruamel.yaml and O(libraries)) with its version, or null when it
        does not import.
      type: dict
    synapse_version:
      description: The matrix-synapse version installed for it, or null.
      type: str
    usable:
      description: Whether it can do the database work.
      type: bool
    problems:
      description: Why not (C(no psycopg2), C(does not exist), ...).
      type: list
      elements: str
synapse_processes:
  description: The running Synapse processes, those reading O(synapse_config) first, then main before workers.
  returned: always
  type: list
  elements: dict
  contains:
    pid:
      description: The process id.
      type: int
    user:
      description: The user it runs as.
      type: str
    role:
      description: C(main) or C(worker).
      type: str
    app:
      description: The Synapse app it runs (C(synapse.app.homeserver), C(synapse.app.generic_worker)).
      type: str
    interpreter:
      description: Its interpreter, argv[0] resolved against its working directory or C(PATH) when relative;
        null when that could not be read.
      type: str
    interpreter_as_given:
      description: argv[0] as the process was started.
      type: str
    config_paths:
      description: Its C(--config-path)/C(-c) arguments (files and conf.d directories), made absolute.
      type: list
      elements: str
synapse_units:
  description: For each of O(synapse_units) (when C(systemctl) exists) - C(unit), C(interpreter),
    C(config_paths) (from its C(ExecStart)), C(error).
  returned: always
  type: list
  elements: dict
pg_dump:
  description: C(path), C(found_in) (C(pg_bindir), C(PATH) or the glob of PostgreSQL's bin directories),
    C(version) (C(15.14)), C(major) (C(15)), C(error).
  returned: always
  type: dict
pg_restore:
  description: The same for C(pg_restore).
  returned: always
  type: dict
pg_bindir:
  description: The directory holding both C(pg_dump) and C(pg_restore), when they were found in one.
  returned: always
  type: str
  sample: /usr/lib/postgresql/15/bin
interpreter:
  description: The interpreter that ran this module.
  returned: always
  type: str
problems:
  description: C(python), C(pg_dump), C(pg_restore) - what is missing and the ways out, or null.
  returned: always
  type: dict
missing:
  description: The messages of RV(problems) that are set; each names what is missing and the ways out.
  returned: always
  type: list
  elements: str
"""

import sys

from ansible.module_utils.basic import AnsibleModule

# Only this file of the library: it needs the standard library alone, so the module runs on a bare Python.
from ansible_collections.matrix.syn2mas.plugins.module_utils._syn2mas.host import runtime as _host_runtime


def main():
    module = AnsibleModule(
        argument_spec=dict(
            python=dict(type="list", elements="path", default=[]),
            discover=dict(type="bool", default=True),
            synapse_units=dict(type="list", elements="str", default=list(_host_runtime.DEFAULT_UNITS)),
            synapse_config=dict(type="list", elements="path", default=[]),
            libraries=dict(type="list", elements="str", choices=list(_host_runtime.LIBRARIES),
                           default=list(_host_runtime.REQUIRED)),
            pg_bindir=dict(type="path"),
            synapse_python=dict(type="path"),
            fail_on_missing=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["python"] and not p["discover"]:
        module.fail_json(msg="give at least one interpreter in python, or let the module discover them")
    found = _host_runtime.discover(
        python=p["python"], discover_more=p["discover"], units=p["synapse_units"], synapse_config=p["synapse_config"],
        pg_bindir=p["pg_bindir"], required=p["libraries"], module_python=sys.executable,
        synapse_python=p["synapse_python"])
    result = dict(changed=False, interpreter=sys.executable, **found)
    if found["missing"] and p["fail_on_missing"]:
        module.fail_json(msg=" | ".join(found["missing"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
