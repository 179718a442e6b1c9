"""The SQL functions of the PostgreSQL store's schema, as its migrations create them: how a
property read from the stored JSON text is typed, compared, grouped and counted the way the
SQLite store's json_type/json_extract read it (tlytics.store.postgres.filters writes the
conditions that call them). Each constant is one migration's text; a later one replaces what
an earlier one created, never edits it (a database migrates through every version).
"""

from __future__ import annotations

# The SQL functions behind property filters, breakdowns and distinct counts: each reads a
# JSON value (`data::json #> path`, the stored text's own spelling) the way SQLite's
# json_type/json_extract do. Numbers get a key equal for equal values as SQLite compares them:
# an integer within 64 bits exactly, any other number as a double (shortest text), an
# integral double as that integer.
FUNCTIONS = """
-- The stored text as json. PostgreSQL cannot hold NUL in text, and its json operators refuse a
-- whole document with a \\u0000 escape anywhere in it: such an escape is read as \\uffff
-- instead, so one event with it cannot fail every filtered read (its NUL then compares as
-- U+FFFF; the stored text is untouched).
CREATE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\\u0000') > 0 THEN replace(t, '\\u0000', '\\uffff') ELSE t END)::json
$$;
CREATE FUNCTION tlytics_number_key(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
      THEN t::numeric::text
    WHEN t::float8 = trunc(t::float8) AND t::float8 >= -9223372036854775808 AND t::float8 < 9223372036854775808
      THEN t::float8::int8::text
    ELSE t::float8::text
  END
$$;
-- SQLite's json_type, with integers and reals as one kind "number".
CREATE FUNCTION tlytics_value_kind(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v) WHEN 'boolean' THEN v::text WHEN 'string' THEN 'text' ELSE json_typeof(v) END
$$;
-- The value breakdowns group by within a kind: a number's key, a string's text, else the JSON.
CREATE FUNCTION tlytics_group_value(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN tlytics_number_key(v::text) WHEN 'string' THEN v #>> '{}' ELSE v::text END
$$;
-- What SQLite's count(DISTINCT json_extract(...)) counts: json_extract gives true as 1 and
-- false as 0, a string as its text, a container as its JSON text, null as NULL (not counted).
CREATE FUNCTION tlytics_value_key(v json) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN 'n' || tlytics_number_key(v::text)
    WHEN 'boolean' THEN CASE v::text WHEN 'true' THEN 'n1' ELSE 'n0' END
    WHEN 'string' THEN 's' || (v #>> '{}')
    WHEN 'null' THEN NULL
    ELSE 's' || v::text
  END
$$;
CREATE FUNCTION tlytics_matches_number(v json, number_key text, string_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v)
    WHEN 'number' THEN tlytics_number_key(v::text) = number_key
    WHEN 'string' THEN (v #>> '{}') = string_text
    ELSE false
  END
$$;
CREATE FUNCTION tlytics_matches_string(v json, string_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE json_typeof(v) WHEN 'string' THEN (v #>> '{}') = string_text ELSE false END
$$;
"""


# Migration 3: the functions behind the ordering (`>` `>=` `<` `<=`) and contains (`~`) filters.
# A number compares as SQLite compares it: an integer within 64 bits exactly, any other number
# as the double it reads as (its shortest decimal, exact as `numeric`; a value beyond a
# double's range as an infinity or 0), and never as an error, whatever its spelling.
FILTER_FUNCTIONS = """
-- The exact value of a JSON number's text; an exponent `numeric` cannot read (beyond what a
-- double holds except as 0 or an infinity) is read as that 0 or infinity.
CREATE FUNCTION tlytics_decimal_value(t text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN strpos(t, 'e') = 0 AND strpos(t, 'E') = 0 THEN t::numeric
    WHEN length(t) <= 60 AND substring(t from '[eE]([+-]?[0-9]+)$')::numeric BETWEEN -900 AND 900
      THEN t::numeric
    WHEN substring(t from '[eE]([+-]?[0-9]+)$')::numeric < 0 OR t ~ '^-?[0.]*[eE]' THEN 0
    WHEN t ~ '^-' THEN '-Infinity'::numeric
    ELSE 'Infinity'::numeric
  END
$$;
-- A value as the nearest double, as `numeric`: the double's shortest decimal, which orders
-- doubles as they order, or its exact integer.
CREATE FUNCTION tlytics_double_value(n numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN abs(n) >= 1.7976931348623158e308 THEN CASE WHEN n < 0 THEN '-Infinity'::numeric ELSE 'Infinity'::numeric END
    WHEN abs(n) < 2.5e-324 THEN 0
    -- Beyond 2^53 a double is an integer: exact as int8 (its shortest decimal is not, and
    -- would misorder it against a 64-bit integer).
    WHEN abs(n::float8) >= 9007199254740992 AND n::float8 >= -9223372036854775808 AND n::float8 < 9223372036854775808
      THEN n::float8::int8::numeric
    ELSE n::float8::text::numeric
  END
$$;
-- Migration 2's tlytics_json, the same answers, no longer STRICT: PostgreSQL inlines a SQL
-- function only when it can prove it strict, which a CASE is not, and a call per row costs
-- more than the parsing itself (a NULL text still gives NULL: strpos and the cast pass it on).
CREATE OR REPLACE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\\u0000') > 0 THEN replace(t, '\\u0000', '\\uffff') ELSE t END)::json
$$;
-- A double's equality key (`d` is its shortest decimal): an integral one within 64 bits as
-- that integer, else its text; compared as the double itself (-2^63 is in range, although
-- its shortest decimal, -9223372036854776000, is not).
CREATE FUNCTION tlytics_double_key(d numeric) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN d::float8 = trunc(d::float8) AND d::float8 >= -9223372036854775808 AND d::float8 < 9223372036854775808
      THEN d::float8::int8::text
    ELSE d::float8::text
  END
$$;
-- The equality key of migration 2, the same wherever that one answered, but never an error:
-- it read every number as float8, which refuses a valid JSON integer beyond a double's range
-- (`1` and 400 zeros) and a number too small for one (`1e-400`).
CREATE OR REPLACE FUNCTION tlytics_number_key(t text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807
      THEN t::numeric::text
    ELSE tlytics_double_key(tlytics_double_value(tlytics_decimal_value(t)))
  END
$$;
CREATE FUNCTION tlytics_number_value(t text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE
    WHEN t ~ '^-?[0-9]{1,19}$' AND t::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 THEN t::numeric
    ELSE tlytics_double_value(tlytics_decimal_value(t))
  END
$$;
-- A JSON number's value; NULL for any other value or a missing one. The wrappers that read
-- their JSON argument more than once are PL/pgSQL: PostgreSQL does not inline a SQL function
-- whose costly argument (the property read from `data`) it would evaluate twice, and a SQL
-- function that is not inlined costs tens of microseconds a row; PL/pgSQL a few.
CREATE FUNCTION tlytics_json_number(v json) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  IF json_typeof(v) = 'number' THEN
    RETURN tlytics_number_value(v::text);
  END IF;
  RETURN NULL;
END
$$;
-- Migration 2's equality functions, the same answers as PL/pgSQL (see above).
CREATE OR REPLACE FUNCTION tlytics_matches_number(v json, number_key text, string_text text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  CASE json_typeof(v)
    WHEN 'number' THEN RETURN tlytics_number_key(v::text) = number_key;
    WHEN 'string' THEN RETURN (v #>> '{}') = string_text;
    ELSE RETURN false;
  END CASE;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_matches_string(v json, string_text text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN json_typeof(v) = 'string' AND (v #>> '{}') = string_text;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_value_key(v json) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  CASE json_typeof(v)
    WHEN 'number' THEN RETURN 'n' || tlytics_number_key(v::text);
    WHEN 'boolean' THEN RETURN CASE v::text WHEN 'true' THEN 'n1' ELSE 'n0' END;
    WHEN 'string' THEN RETURN 's' || (v #>> '{}');
    WHEN 'null' THEN RETURN NULL;
    ELSE RETURN 's' || v::text;
  END CASE;
END
$$;
-- Whether a JSON string contains `needle` (already ASCII-lowered), ASCII letters folded.
CREATE FUNCTION tlytics_contains_text(v json, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
  RETURN json_typeof(v) = 'string'
    AND strpos(translate(v #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), needle) > 0;
END
$$;
"""


# Migration 5: NUL in strings. PostgreSQL text cannot hold U+0000, so a `\u0000` escape is
# read as the two characters U+0001 U+0001, and a `\u0001` as U+0001 U+0002: a code that tells
# every string apart and orders them as SQLite does (Python applies it to the filter values,
# see filters.pg_text, and undoes it on the way out). Migration 2's version read `\u0000` as
# U+FFFF, which made a NUL equal U+FFFF, and it rewrote the six characters `\u0000` of an
# escaped backslash followed by `u0000` too. An escape is one preceded by an even number of
# backslashes. Substring search must look at whole codes only (tlytics_contains_text).
NUL_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION tlytics_json(t text) RETURNS json
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE WHEN strpos(t, '\u000') = 0 THEN t ELSE regexp_replace(
    regexp_replace(t, '(?<!\\)((?:\\\\)*)\\u0001', '\1\\u0001\\u0002', 'g'),
    '(?<!\\)((?:\\\\)*)\\u0000', '\1\\u0001\\u0001', 'g') END)::json
$$;
-- Whether `hay` (coded as above) contains `needle` (coded too): at a whole code only, so a
-- needle never matches the second half of a code.
CREATE FUNCTION tlytics_contains_coded(hay text, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  i integer := 1;
  stop integer := length(hay) - length(needle) + 1;
BEGIN
  WHILE i <= stop LOOP
    IF substr(hay, i, length(needle)) = needle THEN
      RETURN true;
    END IF;
    i := i + CASE WHEN substr(hay, i, 1) = chr(1) THEN 2 ELSE 1 END;
  END LOOP;
  RETURN false;
END
$$;
CREATE OR REPLACE FUNCTION tlytics_contains_text(v json, needle text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  hay text;
BEGIN
  IF json_typeof(v) <> 'string' THEN
    RETURN false;
  END IF;
  hay := translate(v #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
  IF strpos(hay, chr(1)) > 0 THEN
    RETURN tlytics_contains_coded(hay, needle);
  END IF;
  RETURN strpos(hay, needle) > 0;
END
$$;
"""
