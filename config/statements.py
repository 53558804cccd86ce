"""The few statements every request runs, their SQL written once per process instead of
compiled by the ORM on every call.

Django turns a queryset into SQL each time it runs: the filters become a tree of
lookups, the tree is compiled, the values are prepared. That costs 0.3-0.9 ms of CPU per
statement on the machines we measure on, which is more than Postgres spends running a
statement by its primary key (docs/benchmarks.md, "Cost per image"). For the statements
that run for every request (an API token's lookup, a step's claim, a caller's take of
a call and its recording's) this module writes the SQL from the models' own metadata,
once per shape: the table and column names quoted by the backend, the values prepared by
their fields (`get_db_prep_value`), the rows turned into instances with the backend's
and the fields' converters and `Model.from_db()`, as a queryset does. So they mean on
Postgres and on SQLite what the querysets they replace meant; their tests run on both.

Everything else stays on the ORM.
"""

import functools
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import Model


def _quote(alias: str, name: str) -> str:
    return connections[alias].ops.quote_name(name)


@dataclass(frozen=True)
class Reader:
    """Turns the columns select_list() names into an instance of `model`."""

    model: type[Model]
    attnames: tuple[str, ...]
    # (position, converters, column) for each column that has converters.
    converters: tuple[tuple[int, tuple, object], ...]

    def instance(self, alias: str, values) -> Model:
        connection = connections[alias]
        values = list(values)
        for position, functions, column in self.converters:
            for convert in functions:
                values[position] = convert(values[position], column, connection)
        return self.model.from_db(alias, self.attnames, values)


@functools.cache
def reader(model: type[Model], alias: str) -> Reader:
    connection = connections[alias]
    fields = model._meta.concrete_fields
    converters = []
    for position, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((position, tuple(functions), column))
    return Reader(model, tuple(f.attname for f in fields), tuple(converters))


@functools.cache
def select_list(model: type[Model], alias: str) -> str:
    """Every concrete column of `model`, qualified by its table, in reader()'s order."""
    table = _quote(alias, model._meta.db_table)
    return ", ".join(f"{table}.{_quote(alias, f.column)}" for f in model._meta.concrete_fields)


def db_value(model: type[Model], alias: str, name: str, value, *, saving: bool = False):
    """`value` as the database takes it for the field `name` (a UUID as SQLite stores it,
    an aware datetime as SQLite's text, ...): as a value to store, or to compare with."""
    if value is None:
        return None
    field = model._meta.get_field(name)
    if saving:
        return field.get_db_prep_save(value, connections[alias])
    return field.get_db_prep_value(value, connections[alias])


@functools.cache
def _update_sql(
    model: type[Model], alias: str, sets: tuple, keeps: tuple, where: tuple, returning: bool
) -> str:
    q = functools.partial(_quote, alias)
    meta = model._meta

    def column(name: str) -> str:
        return q(meta.get_field(name).column)

    assignments = [f"{column(name)} = %s" for name in sets]
    assignments += [f"{column(name)} = COALESCE({column(name)}, %s)" for name in keeps]
    conditions = []
    for name, count in where:
        if count is None:
            conditions.append(f"{column(name)} = %s")
        else:
            conditions.append(f"{column(name)} IN ({', '.join(['%s'] * count)})")
    # Names from the model's metadata, quoted by the backend; every value a parameter.
    sql = f"UPDATE {q(meta.db_table)} SET {', '.join(assignments)}"  # noqa: S608
    sql += f" WHERE {' AND '.join(conditions)}"
    if returning:
        sql += " RETURNING " + ", ".join(q(f.column) for f in meta.concrete_fields)
    return sql


def _update(model, alias, set: dict, keep: dict, where: dict, *, returning: bool):
    shape_where = tuple(
        (name, len(value) if isinstance(value, list | tuple) else None)
        for name, value in where.items()
    )
    sql = _update_sql(model, alias, tuple(set), tuple(keep), shape_where, returning)
    params = [db_value(model, alias, name, value, saving=True) for name, value in set.items()]
    params += [db_value(model, alias, name, value, saving=True) for name, value in keep.items()]
    for name, value in where.items():
        if isinstance(value, list | tuple):
            params += [db_value(model, alias, name, v) for v in value]
        else:
            params.append(db_value(model, alias, name, value))
    with (
        transaction.mark_for_rollback_on_error(using=alias),
        connections[alias].cursor() as cursor,
    ):
        cursor.execute(sql, params)
        if returning:
            row = cursor.fetchone()
            return None if row is None else reader(model, alias).instance(alias, row)
        return cursor.rowcount


def update_returning(
    model: type[Model], alias: str, *, set: dict, keep: dict | None = None, where: dict
) -> Model | None:
    """`UPDATE … SET set, keep WHERE where RETURNING *` of at most one row (`where` names
    the primary key), as an instance of `model`, or None if no row matched. `keep`: the
    fields set only where they are NULL (`COALESCE(column, value)`). A value of `where`
    that is a list or tuple is an `IN`; every condition is an equality (never NULL)."""
    return _update(model, alias, set, keep or {}, where, returning=True)


def update(model: type[Model], alias: str, *, set: dict, where: dict) -> int:
    """`UPDATE … SET set WHERE where`: how many rows it changed. Values only (an
    expression such as `F("step") + 1` needs the ORM's `QuerySet.update()`)."""
    return _update(model, alias, set, {}, where, returning=False)


@functools.cache
def _insert_plan(model: type[Model], alias: str) -> tuple[str, tuple]:
    q = functools.partial(_quote, alias)
    meta = model._meta
    auto = meta.auto_field
    fields = tuple(
        f for f in meta.concrete_fields if f is not auto and not getattr(f, "generated", False)
    )
    # Names from the model's metadata, quoted by the backend; every value a parameter.
    sql = f"INSERT INTO {q(meta.db_table)} ({', '.join(q(f.column) for f in fields)})"
    sql += f" VALUES ({', '.join(['%s'] * len(fields))})"
    if auto is not None:
        sql += f" RETURNING {q(auto.column)}"
    return sql, fields


def insert(instance: Model, alias: str) -> Model:
    """`instance.save(force_insert=True)` for a new row of a model without parents: the
    fields' `pre_save()` (a file already stored gives its name, a default its value),
    their values prepared for the database, and the key the database gave an
    auto-incremented primary key read back. Model signals are not sent (nothing in the
    product listens to the models written here)."""
    model = type(instance)
    if model._meta.parents:
        raise TypeError(f"{model.__name__} has parents: save() it.")
    sql, fields = _insert_plan(model, alias)
    connection = connections[alias]
    params = [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in fields]
    with (
        transaction.mark_for_rollback_on_error(using=alias),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)
        if model._meta.auto_field is not None:
            instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = alias
    return instance


def create(model: type[Model], alias: str, /, **fields) -> Model:
    """`model.objects.create(**fields)` through insert()."""
    return insert(model(**fields), alias)


@functools.cache
def _values_plan(model: type[Model], alias: str, names: tuple, suffix: str):
    q = functools.partial(_quote, alias)
    meta = model._meta
    connection = connections[alias]
    fields = [meta.get_field(name) for name in names]
    # Names from the model's metadata, quoted by the backend; every value a parameter.
    sql = f"SELECT {', '.join(q(f.column) for f in fields)} FROM {q(meta.db_table)}"  # noqa: S608
    sql += f" WHERE {q(meta.pk.column)} = %s{suffix}"
    converters = []
    for field in fields:
        column = field.get_col(meta.db_table)
        converters.append(
            (
                tuple(
                    connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                ),
                column,
            )
        )
    return sql, tuple(converters)


def values_by_pk(model: type[Model], alias: str, pk, names: tuple, *, suffix: str = ""):
    """The fields `names` of the row with primary key `pk`, as `values_list(*names)` gives
    them, or None: `SELECT … WHERE pk = %s` followed by `suffix` (a row lock)."""
    sql, converters = _values_plan(model, alias, tuple(names), suffix)
    connection = connections[alias]
    with (
        transaction.mark_for_rollback_on_error(using=alias),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [db_value(model, alias, model._meta.pk.name, pk)])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for position, (functions, column) in enumerate(converters):
        for convert in functions:
            values[position] = convert(values[position], column, connection)
    return tuple(values)
