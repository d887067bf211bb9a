"""Facts the C side owns and the Python side reads: they must not drift apart.

Status codes: Python knows each status by the name the engine gives it
(tms_status_name), never by a copied number. Statistics: the fields of
tms_stats_json, the TagStats record and the comment of tms.h list the same names.
"""

import re
from dataclasses import fields

from conftest import REPO
from torch_memory_saver import TagStats, _library, errors
from torch_memory_saver._stats import stats_json

MIB = 2**20


def _status_names(lib):
    return [_library.status_name(code) for code in range(lib.tms_status_count())]


def test_every_status_code_has_its_own_name(lib):
    names = _status_names(lib)
    assert names[0] == "TMS_OK"
    assert len(set(names)) == len(names)
    assert "TMS_ERROR_UNKNOWN_STATUS" not in names
    assert _library.status_name(lib.tms_status_count()) == "TMS_ERROR_UNKNOWN_STATUS"


def test_python_has_an_exception_class_for_every_engine_status(lib):
    failures = _status_names(lib)[1:]
    assert sorted(errors._CLASS_BY_STATUS_NAME) == sorted(failures)
    for code, name in enumerate(failures, start=1):
        error = errors.error_from_status(code, "message", _library.status_name(code))
        assert type(error) is errors._CLASS_BY_STATUS_NAME[name]
        assert error.status == code and error.status_name == name


def test_a_failed_call_raises_the_class_of_its_status_name(lib):
    try:
        _library.check(lib.tms_set_cpu_backup_backend(b"no-such-backend"))
    except errors.InvalidArgumentError as exc:
        assert exc.status_name == "TMS_ERROR_INVALID_ARGUMENT"
        assert _library.status_name(exc.status) == exc.status_name
    else:
        raise AssertionError("an unknown backend must be refused")


def _entry_fields():
    return [f.name for f in fields(TagStats)]


def test_statistics_fields_are_the_same_in_the_engine_and_in_python(allocate):
    allocate(4 * MIB, tag="agree")
    document = stats_json()
    assert sorted(document) == ["deferred_releases", "driver", "entries"]
    (entry,) = [e for e in document["entries"] if e["tag"] == "agree"]
    assert list(entry) == _entry_fields()


def test_the_c_header_documents_every_statistics_field():
    header = (REPO / "include" / "torch_memory_saver" / "tms.h").read_text()
    comment = re.search(r"/\*\* Statistics as JSON:(.*?)\*/", header, re.S).group(1)
    documented = re.findall(r'"([a-z_]+)"', comment)
    assert documented == ["driver", "deferred_releases", "entries"] + _entry_fields()
