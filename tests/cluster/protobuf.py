"""Decoding of the Kubernetes protobuf wire format, which kubectl's and helm's typed clients send
(`application/vnd.kubernetes.protobuf`: `kubectl create namespace|secret|job|token`, helm's release
Secrets). The message definitions are not written here: they are read from the clients themselves —
every Go binary built from k8s.io/api embeds each generated.proto as a gzipped FileDescriptorProto —
so the double decodes exactly the schema the client encoded with."""

import base64
import datetime
import functools
import json
import re
import struct
import zlib

MAGIC = b"k8s\x00"

# descriptor.proto field numbers (FileDescriptorProto, DescriptorProto, FieldDescriptorProto)
_FILE = {1: ("name", "s"), 2: ("package", "s"), 4: ("message_type", "m")}
_MSG = {1: ("name", "s"), 2: ("field", "f"), 3: ("nested_type", "m"), 7: ("options", "o")}
_FIELD = {1: ("name", "s"), 3: ("number", "i"), 4: ("label", "i"), 5: ("type", "i"), 6: ("type_name", "s"),
          10: ("json_name", "s")}
_REPEATED, _MESSAGE, _BYTES, _STRING, _BOOL = 3, 11, 12, 9, 8


# Fields whose Go struct is embedded inline in the JSON form (`json:",inline"`); the protobuf
# form keeps them as a nested message.
INLINE = {("Volume", "volumeSource"), ("PersistentVolumeSpec", "persistentVolumeSource"),
          ("EphemeralContainer", "ephemeralContainerCommon"), ("Probe", "handler")}


class DecodeError(Exception):
    pass


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yields (field number, wire type, value) of one message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise DecodeError(f"unsupported wire type {wt}")
        yield num, wt, val


def _parse_descriptor(buf, table):
    out = {}
    for num, _, val in _fields(buf):
        if num not in table:
            continue
        name, kind = table[num]
        if kind == "s":
            out[name] = val.decode()
        elif kind == "i":
            out[name] = val
        elif kind == "m":
            out.setdefault(name, []).append(_parse_descriptor(val, _MSG))
        elif kind == "f":
            out.setdefault(name, []).append(_parse_descriptor(val, _FIELD))
        elif kind == "o":
            out["map_entry"] = any(n == 7 and v for n, _, v in _fields(val))
    return out


@functools.lru_cache(maxsize=None)
def messages(binary):
    """{'.k8s.io.api.core.v1.Pod': descriptor} from the FileDescriptorProtos embedded in `binary`."""
    with open(binary, "rb") as f:
        data = f.read()
    table = {}
    for m in re.finditer(b"\x1f\x8b\x08\x00\x00\x00\x00\x00", data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start():m.start() + 1_000_000])
        except zlib.error:
            continue
        if not raw.startswith(b"\n") or b"generated.proto" not in raw[:120]:
            continue
        try:
            fd = _parse_descriptor(raw, _FILE)
        except (DecodeError, UnicodeDecodeError, IndexError):
            continue

        def add(prefix, msgs):
            for msg in msgs:
                full = f"{prefix}.{msg['name']}"
                table[full] = msg
                add(full, msg.get("nested_type", []))
        add("." + fd.get("package", ""), fd.get("message_type", []))
    if not table:
        raise DecodeError(f"no protobuf descriptors found in {binary}")
    return table


def _package(api_version, kind):
    if kind in ("DeleteOptions", "Status", "ListOptions", "PatchOptions", "CreateOptions", "UpdateOptions"):
        return ".k8s.io.apimachinery.pkg.apis.meta.v1"
    group, _, version = api_version.rpartition("/")
    short = group.split(".")[0] if group else "core"
    return f".k8s.io.api.{short}.{version}"


def decode(body, binary):
    """A protobuf request body -> the object as the JSON the same client would have sent."""
    if not body.startswith(MAGIC):
        raise DecodeError("missing the k8s protobuf magic number")
    table = messages(binary)
    unknown = {}
    for num, _, val in _fields(body[4:]):
        unknown[num] = val
    type_meta = {n: v.decode() for n, _, v in _fields(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    name = f"{_package(api_version, kind)}.{kind}"
    if name not in table:
        raise DecodeError(f"no protobuf message {name} for {api_version} {kind}")
    obj = _message(unknown.get(2, b""), name, table)
    obj = {"apiVersion": api_version, "kind": kind, **obj}
    return obj


def _time(msg):
    secs = nanos = 0
    for num, _, val in _fields(msg):
        if num == 1:
            secs = val - (1 << 64) if val >= 1 << 63 else val
        elif num == 2:
            nanos = val
    if secs == 0 and nanos == 0:
        return None
    t = datetime.datetime.fromtimestamp(secs, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _special(type_name, val, table):
    """The apimachinery types whose JSON form is not their protobuf structure."""
    short = type_name.rsplit(".", 1)[-1]
    if type_name.startswith(".k8s.io.apimachinery.pkg.apis.meta.v1.") and short in ("Time", "MicroTime"):
        return True, _time(val)
    if type_name == ".k8s.io.apimachinery.pkg.util.intstr.IntOrString":
        f = {n: v for n, _, v in _fields(val)}
        if f.get(1, 0) == 1:
            return True, f.get(3, b"").decode()
        v = f.get(2, 0)
        return True, v - (1 << 64) if v >= 1 << 63 else v
    if type_name == ".k8s.io.apimachinery.pkg.api.resource.Quantity":
        return True, next((v.decode() for n, _, v in _fields(val) if n == 1), "")
    if type_name in (".k8s.io.apimachinery.pkg.runtime.RawExtension", ".k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1"):
        raw = next((v for n, _, v in _fields(val) if n == 1), b"")
        return True, json.loads(raw) if raw else None
    if type_name == ".k8s.io.apimachinery.pkg.apis.meta.v1.Duration":
        ns = next((v for n, _, v in _fields(val) if n == 1), 0)
        return True, f"{ns / 1e9:g}s"
    return False, None


def _scalar(ftype, wt, val):
    if ftype == _STRING:
        return val.decode()
    if ftype == _BYTES:
        return base64.b64encode(val).decode()
    if ftype == _BOOL:
        return bool(val)
    if ftype in (1,):
        return struct.unpack("<d", val)[0]
    if ftype in (2,):
        return struct.unpack("<f", val)[0]
    if ftype in (3, 5, 14, 15, 16) and wt == 0:
        return val - (1 << 64) if val >= 1 << 63 else val
    if ftype in (17, 18):
        return (val >> 1) ^ -(val & 1)
    return val


def _message(buf, type_name, table):
    desc = table.get(type_name)
    if desc is None:
        raise DecodeError(f"unknown message type {type_name}")
    by_num = {f["number"]: f for f in desc.get("field", [])}
    out = {}
    for num, wt, val in _fields(buf):
        field = by_num.get(num)
        if field is None:
            continue  # a field this client's schema has but the descriptor table lacks: none expected
        key = field.get("json_name") or field["name"]
        ftype, repeated = field.get("type"), field.get("label") == _REPEATED
        if ftype == _MESSAGE:
            sub = table.get(field["type_name"])
            if sub is not None and sub.get("map_entry"):
                kf = {f["number"]: f for f in sub["field"]}
                entry = {n: (w, v) for n, w, v in _fields(val)}
                k = _scalar(kf[1]["type"], *entry.get(1, (2, b""))) if 1 in entry else ""
                if 2 in entry:
                    w, v = entry[2]
                    if kf[2]["type"] == _MESSAGE:
                        special, value = _special(kf[2]["type_name"], v, table)
                        if not special:
                            value = _message(v, kf[2]["type_name"], table)
                    else:
                        value = _scalar(kf[2]["type"], w, v)
                else:
                    value = "" if kf[2]["type"] in (_STRING, _BYTES) else None
                out.setdefault(key, {})[k] = value
                continue
            special, value = _special(field["type_name"], val, table)
            if not special:
                value = _message(val, field["type_name"], table)
                if (desc["name"], field["name"]) in INLINE:
                    out.update(value)  # a Go struct embedded with `json:",inline"`
                    continue
        elif wt == 2 and ftype not in (_STRING, _BYTES):
            # packed repeated scalars
            values, pos = [], 0
            while pos < len(val):
                v, pos = _varint(val, pos)
                values.append(_scalar(ftype, 0, v))
            out.setdefault(key, []).extend(values)
            continue
        else:
            value = _scalar(ftype, wt, val)
        if repeated:
            out.setdefault(key, []).append(value)
        elif value is not None and value != "":
            out[key] = value  # an empty message stays: `emptyDir: {}` is a choice, not an absence
    return out
