-- The "graph" both end-to-end suites back up when PostgreSQL stands in for the graph server
-- (tests/e2e/pod_runner.py, tests/cluster/test_modes.py): tables with keys, a foreign key, an
-- index, a sequence past its start, a view, jsonb and bytea values; 20000 vertices and edges.
create table vertices (id bigint primary key, label text not null, props jsonb, blob bytea);
create table edges (src bigint references vertices, dst bigint references vertices, kind text);
create index edges_src on edges (src);
create sequence graph_seq start 1000;
create view labels as select label, count(*) from vertices group by label;
insert into vertices select i, 'label-' || (i % 17), jsonb_build_object('i', i, 'sq', i * i),
       decode(md5(i::text) || md5((i * 7)::text), 'hex') from generate_series(1, 20000) i;
insert into edges select i, (i * 31) % 20000 + 1, 'kind-' || (i % 5) from generate_series(1, 20000) i;
select setval('graph_seq', 4242);
