"""quotas_take(): on Postgres, admission moves a team's running counters in one statement,
sent in the same round trip as the COMMIT (quotas.services.reserving), so the counter
rows are locked for the commit alone. Schema and counters are unchanged: nothing to
backfill. SQLite has no server-side functions; there the counters move from Python."""

from django.db import migrations

# Checks every limit the team has and moves every counter it needs, or none: the
# member's day, the team's day, then its month, the order every writer locks them in
# (quotas.services._counters). On a refusal it takes back what it added and returns (or,
# strict, raises with SQLSTATE QX001 and as DETAIL) the refusing counter and the values
# of all three, as JSON, for the refusal's message. NULL caps are unlimited. A missing
# row is first created from the ledger's sum (quotas_seed(), what quotas.services._seed
# does on SQLite), without this admission's own entry.
CREATE = """
CREATE OR REPLACE FUNCTION quotas_seed(
    p_team uuid, p_member bigint, p_period text, p_start date, p_since timestamptz,
    p_until timestamptz, p_images integer, p_micro bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_member IS NULL THEN
        IF EXISTS (SELECT 1 FROM quotas_usagecounter WHERE team_id = p_team
                   AND member_id IS NULL AND period = p_period AND start = p_start) THEN
            RETURN;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM quotas_usagecounter WHERE team_id = p_team
                  AND member_id = p_member AND period = p_period AND start = p_start) THEN
        RETURN;
    END IF;
    INSERT INTO quotas_usagecounter (team_id, member_id, period, start, images, micro_usd)
    SELECT p_team, p_member, p_period, p_start,
           coalesce(sum(CASE kind WHEN 'reserve' THEN images
                                  WHEN 'refund' THEN -images ELSE 0 END), 0) - p_images,
           CASE WHEN p_period = 'month'
                THEN round(coalesce(sum(amount_usd - reserved_usd), 0) * 1000000)::bigint
                     - p_micro
                ELSE 0 END
      FROM quotas_usageentry
     WHERE team_id = p_team AND (p_member IS NULL OR user_id = p_member)
       AND admitted >= p_since AND admitted < p_until
    ON CONFLICT DO NOTHING;
END;
$$;

CREATE OR REPLACE FUNCTION quotas_take(
    p_team uuid, p_member bigint, p_day date, p_month date, p_images integer,
    p_micro bigint, p_member_cap integer, p_day_cap integer, p_month_cap integer,
    p_usd_cap bigint, p_strict boolean, p_day_since timestamptz, p_day_until timestamptz,
    p_month_since timestamptz, p_month_until timestamptz
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    refused text;
    used text;
BEGIN
    -- A counter's first use in its period creates its row from the ledger here, in the
    -- commit's round trip too (the sum sees this admission's own entry: left out).
    IF p_member_cap IS NOT NULL THEN
        PERFORM quotas_seed(p_team, p_member, 'day', p_day, p_day_since, p_day_until,
                            p_images, p_micro);
    END IF;
    IF p_day_cap IS NOT NULL THEN
        PERFORM quotas_seed(p_team, NULL, 'day', p_day, p_day_since, p_day_until,
                            p_images, p_micro);
    END IF;
    IF p_month_cap IS NOT NULL OR p_usd_cap IS NOT NULL THEN
        PERFORM quotas_seed(p_team, NULL, 'month', p_month, p_month_since, p_month_until,
                            p_images, p_micro);
    END IF;
    IF p_member_cap IS NOT NULL THEN
        UPDATE quotas_usagecounter SET images = images + p_images
         WHERE team_id = p_team AND member_id = p_member AND period = 'day'
           AND start = p_day AND images + p_images <= p_member_cap;
        IF NOT FOUND THEN
            refused := 'member_day';
        END IF;
    END IF;
    IF refused IS NULL AND p_day_cap IS NOT NULL THEN
        UPDATE quotas_usagecounter SET images = images + p_images
         WHERE team_id = p_team AND member_id IS NULL AND period = 'day'
           AND start = p_day AND images + p_images <= p_day_cap;
        IF NOT FOUND THEN
            refused := 'day';
        END IF;
    END IF;
    IF refused IS NULL AND (p_month_cap IS NOT NULL OR p_usd_cap IS NOT NULL) THEN
        UPDATE quotas_usagecounter
           SET images = images + p_images, micro_usd = micro_usd + p_micro
         WHERE team_id = p_team AND member_id IS NULL AND period = 'month'
           AND start = p_month
           AND (p_month_cap IS NULL OR images + p_images <= p_month_cap)
           AND (p_usd_cap IS NULL OR micro_usd + p_micro <= p_usd_cap);
        IF NOT FOUND THEN
            refused := 'month';
        END IF;
    END IF;
    IF refused IS NULL THEN
        RETURN NULL;
    END IF;
    IF refused <> 'member_day' AND p_member_cap IS NOT NULL THEN
        UPDATE quotas_usagecounter SET images = images - p_images
         WHERE team_id = p_team AND member_id = p_member AND period = 'day'
           AND start = p_day;
    END IF;
    IF refused = 'month' AND p_day_cap IS NOT NULL THEN
        UPDATE quotas_usagecounter SET images = images - p_images
         WHERE team_id = p_team AND member_id IS NULL AND period = 'day'
           AND start = p_day;
    END IF;
    SELECT json_build_object(
        'refused', refused,
        'member_day', (SELECT images FROM quotas_usagecounter WHERE team_id = p_team
                        AND member_id = p_member AND period = 'day' AND start = p_day),
        'day', (SELECT images FROM quotas_usagecounter WHERE team_id = p_team
                 AND member_id IS NULL AND period = 'day' AND start = p_day),
        'month', (SELECT images FROM quotas_usagecounter WHERE team_id = p_team
                   AND member_id IS NULL AND period = 'month' AND start = p_month),
        'micro_usd', (SELECT micro_usd FROM quotas_usagecounter WHERE team_id = p_team
                       AND member_id IS NULL AND period = 'month' AND start = p_month)
    )::text INTO used;
    IF p_strict THEN
        RAISE EXCEPTION 'quota exceeded' USING ERRCODE = 'QX001', DETAIL = used;
    END IF;
    RETURN used;
END;
$$;
"""

DROP = (
    "DROP FUNCTION IF EXISTS quotas_take(uuid, bigint, date, date, integer, bigint, integer, "
    "integer, integer, bigint, boolean, timestamptz, timestamptz, timestamptz, timestamptz); "
    "DROP FUNCTION IF EXISTS quotas_seed(uuid, bigint, text, date, timestamptz, timestamptz, "
    "integer, bigint)"
)


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("quotas", "0004_running_counters")]

    operations = [migrations.RunPython(create, drop, elidable=False)]
