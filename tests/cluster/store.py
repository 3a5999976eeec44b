"""The API double's state: objects by (group, plural, namespace, name), one resourceVersion counter for
everything (as etcd's revision), and the event history that watches replay."""

import copy
import threading


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.revision = 1
        self.objects = {}
        self.history = []  # (revision, key, namespace, event type, object)

    def peek(self, key, namespace, name):
        """The stored object itself (callers copy before changing)."""
        with self.lock:
            return self.objects.get((key, namespace or None, name))

    def get(self, key, namespace, name):
        return copy.deepcopy(self.peek(key, namespace, name))

    def items(self, key, namespace):
        """Objects of one resource, in one namespace or (None) all; sorted by namespace/name as etcd lists."""
        with self.lock:
            found = [o for (k, ns, _), o in self.objects.items() if k == key and (namespace is None or ns == namespace)]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def all_items(self):
        with self.lock:
            return [(k, o) for (k, _, _), o in self.objects.items()]

    def write(self, key, obj, event):
        """Stores a copy of `obj` under a new resourceVersion; event is ADDED or MODIFIED."""
        with self.lock:
            self.revision += 1
            obj["metadata"]["resourceVersion"] = str(self.revision)
            stored = copy.deepcopy(obj)
            meta = stored["metadata"]
            self.objects[(key, meta.get("namespace"), meta["name"])] = stored
            self.history.append((self.revision, key, meta.get("namespace"), event, stored))
            self.changed.notify_all()
            return copy.deepcopy(stored)

    def remove(self, key, obj):
        with self.lock:
            meta = obj["metadata"]
            stored = self.objects.pop((key, meta.get("namespace"), meta["name"]), None)
            if stored is None:
                return None
            self.revision += 1
            gone = copy.deepcopy(stored)
            gone["metadata"]["resourceVersion"] = str(self.revision)
            self.history.append((self.revision, key, meta.get("namespace"), "DELETED", gone))
            self.changed.notify_all()
            return copy.deepcopy(gone)

    def events_after(self, revision, key, namespace):
        with self.lock:
            return [(rv, ev, o) for rv, k, ns, ev, o in self.history
                    if rv > revision and k == key and (namespace is None or ns == namespace)]
