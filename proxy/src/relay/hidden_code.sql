-- Whether the session's database holds code that a statement naming no
-- function can run (see relay/hidden.rs): a user-defined object (not part
-- of an extension) through which the server calls a function that may do
-- what no rollback undoes, namely a volatile one, or any user-defined one
-- not written in C (SQL, PL/pgSQL and the other languages, whose author may
-- be anyone allowed to create a function). One row: that boolean, then
-- three lists of names (JSON arrays, with repeats): those a called
-- function may have and be one that can create code (any not built in, a
-- procedure, a built-in one that runs SQL text it is given), those of
-- volatile built-in functions, and those of every built-in function. A
-- call whose name is in the last list and not in the first can only be of
-- a built-in function that runs no SQL of its own, whatever the search
-- path; one not in the second either changes nothing. A function created
-- after this reading has a name in none of them (unless it takes a
-- built-in one), so its calls are weighed as a user-written function's.
WITH member AS (
    -- Objects an extension installed (trusted as the extension is).
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
    WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
),
trees (classid, objid, tree, column_default) AS (
    -- Expressions stored with user-defined objects: views and rules, row
    -- security policies, check constraints of tables and domains (a cast
    -- to a domain checks it), column and domain defaults, trigger
    -- conditions, index expressions and predicates, partition keys. Calls
    -- of built-in functions leave no trace in pg_depend, so the functions
    -- are read from the trees themselves.
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, r.ev_class,
           pg_catalog.concat(r.ev_action::pg_catalog.text, r.ev_qual::pg_catalog.text), false
    FROM pg_catalog.pg_rewrite r WHERE r.oid >= 16384
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, p.polrelid,
           pg_catalog.concat(p.polqual::pg_catalog.text, p.polwithcheck::pg_catalog.text), false
    FROM pg_catalog.pg_policy p
    UNION ALL
    SELECT CASE WHEN c.contypid <> 0 THEN 'pg_catalog.pg_type'::pg_catalog.regclass
                ELSE 'pg_catalog.pg_class'::pg_catalog.regclass END,
           CASE WHEN c.contypid <> 0 THEN c.contypid ELSE c.conrelid END,
           c.conbin::pg_catalog.text, false
    FROM pg_catalog.pg_constraint c WHERE c.oid >= 16384 AND c.conbin IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, a.adrelid, a.adbin::pg_catalog.text, true
    FROM pg_catalog.pg_attrdef a
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, t.typdefaultbin::pg_catalog.text, false
    FROM pg_catalog.pg_type t WHERE t.oid >= 16384 AND t.typdefaultbin IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, t.tgrelid, t.tgqual::pg_catalog.text, false
    FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal AND t.tgqual IS NOT NULL
    UNION ALL
    -- Index expressions and predicates (a write computes them) and
    -- partition keys (a write routes by them, a read prunes by them).
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indrelid,
           pg_catalog.concat(i.indexprs::pg_catalog.text, i.indpred::pg_catalog.text), false
    FROM pg_catalog.pg_index i
    WHERE i.indexrelid >= 16384 AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, p.partrelid, p.partexprs::pg_catalog.text, false
    FROM pg_catalog.pg_partitioned_table p WHERE p.partexprs IS NOT NULL
),
paths (classid, objid, fn, column_default) AS (
    -- Operators (`a === b`), casts (`x::t`), a type's input, output,
    -- typmod and subscript functions, a range type's functions, and
    -- operator class support functions (`ORDER BY`, joins, indexes).
    SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid, o.oprcode, false
    FROM pg_catalog.pg_operator o WHERE o.oid >= 16384
    UNION ALL
    SELECT 'pg_catalog.pg_cast'::pg_catalog.regclass, c.oid, c.castfunc, false
    FROM pg_catalog.pg_cast c WHERE c.oid >= 16384
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, f.fn, false
    FROM pg_catalog.pg_type t,
         LATERAL (VALUES (t.typinput), (t.typoutput), (t.typreceive), (t.typsend),
                         (t.typmodin), (t.typmodout), (t.typsubscript)) AS f (fn)
    WHERE t.oid >= 16384
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, r.rngtypid, f.fn, false
    FROM pg_catalog.pg_range r,
         LATERAL (VALUES (r.rngcanonical), (r.rngsubdiff)) AS f (fn)
    WHERE r.rngtypid >= 16384
    UNION ALL
    SELECT 'pg_catalog.pg_amproc'::pg_catalog.regclass, a.oid, a.amproc, false
    FROM pg_catalog.pg_amproc a WHERE a.oid >= 16384
    UNION ALL
    -- Every function a stored expression calls (a node's funcid, opfuncid,
    -- aggfnoid or winfnoid).
    SELECT trees.classid, trees.objid, called.fn, trees.column_default
    FROM trees,
         LATERAL (SELECT m[2]::pg_catalog.oid AS fn
                  FROM pg_catalog.regexp_matches(trees.tree,
                       ':(funcid|opfuncid|aggfnoid|winfnoid) ([0-9]+)', 'g') AS m) AS called
    UNION ALL
    -- Triggers (a write fires them).
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, t.tgrelid, t.tgfoid, false
    FROM pg_catalog.pg_trigger t WHERE NOT t.tgisinternal
    UNION ALL
    -- Functions that take a row: `t.f` (attribute notation) calls f(t)
    -- while naming a column, for a function of one argument of a composite
    -- type (or one a row can be passed as: a domain, a pseudo-type such as
    -- `record` or `anyelement`).
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.oid, false
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_type a ON a.oid = p.proargtypes[0]
    WHERE p.oid >= 16384 AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1
      AND a.typtype IN ('c', 'd', 'p')
)
SELECT EXISTS (
    SELECT FROM paths
    JOIN pg_catalog.pg_proc p ON p.oid = paths.fn
    JOIN pg_catalog.pg_language l ON l.oid = p.prolang
    WHERE (p.provolatile = 'v' OR (p.oid >= 16384 AND l.lanname NOT IN ('internal', 'c')))
      -- A column default that calls a built-in function (`nextval` of a
      -- serial column, `gen_random_uuid()`, `clock_timestamp()`): what
      -- such a default does beyond giving a value is a sequence moving on.
      AND NOT (paths.column_default AND p.oid < 16384)
      AND (paths.classid, paths.objid) NOT IN (SELECT m.classid, m.objid FROM member m)
), names.creating_code, names.volatile, names.builtin
-- The lists of names, from one scan of pg_proc.
FROM (
    SELECT pg_catalog.json_agg(p.proname)
               FILTER (WHERE p.oid >= 16384 OR p.prokind = 'p'
                          OR p.proname IN ('query_to_xml', 'query_to_xmlschema',
                                           'query_to_xml_and_xmlschema', 'cursor_to_xml',
                                           'cursor_to_xmlschema', 'table_to_xml',
                                           'table_to_xmlschema', 'table_to_xml_and_xmlschema',
                                           'schema_to_xml', 'schema_to_xmlschema',
                                           'schema_to_xml_and_xmlschema', 'database_to_xml',
                                           'database_to_xmlschema',
                                           'database_to_xml_and_xmlschema', 'ts_rewrite',
                                           'ts_stat')),
           pg_catalog.json_agg(p.proname)
               FILTER (WHERE p.oid < 16384 AND p.provolatile = 'v'),
           pg_catalog.json_agg(p.proname) FILTER (WHERE p.oid < 16384)
    FROM pg_catalog.pg_proc p
) AS names (creating_code, volatile, builtin)
