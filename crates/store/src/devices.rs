//! The device inventory: devices, their state, what they reported about themselves.
use crate::{Result, Store, StoreError};
use autoenroll_core::model::DeviceState;
use autoenroll_core::UnixTime;
use sqlx::FromRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: i64,
    pub name: String,
    pub state: DeviceState,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    /// Who the device is bound to: `account:NAME` (the account that first enrolled it), `admin`
    /// (set up by an administrator: tokens, challenges) or None (not yet bound).
    pub owner: Option<String>,
}

impl Device {
    pub fn is_blocked(&self) -> bool {
        self.state == DeviceState::Blocked
    }
}

row_struct! {
    struct DeviceRow {
        id: i64,
        name: String,
        blocked: i64,
        created_at: i64,
        last_seen: i64,
        owner: Option<String>,
    }
}

fn state(blocked: i64) -> DeviceState {
    if blocked != 0 {
        DeviceState::Blocked
    } else {
        DeviceState::Active
    }
}

impl From<DeviceRow> for Device {
    fn from(r: DeviceRow) -> Device {
        Device {
            id: r.id,
            name: r.name,
            state: state(r.blocked),
            created_at: UnixTime(r.created_at),
            last_seen: UnixTime(r.last_seen),
            owner: r.owner,
        }
    }
}

/// A device with what the inventory knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub name: String,
    pub state: DeviceState,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    /// Certificates currently issued (not renewed, revoked or expired).
    pub certificates: i64,
    /// The earliest renewal time among them.
    pub next_renewal: Option<UnixTime>,
}

/// `last_seen` is written at most this often (a write per request would be a commit per request).
const LAST_SEEN_PRECISION_SECS: i64 = 300;

/// Which devices `devices_matching` returns.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// A substring of the name (empty: every device).
    pub name_contains: String,
    /// Only blocked (true) or only active (false) devices.
    pub blocked: Option<bool>,
    pub limit: i64,
}

#[derive(FromRow)]
struct SummaryRow {
    name: String,
    blocked: i64,
    created_at: i64,
    last_seen: i64,
    certificates: i64,
    next_renewal: Option<i64>,
}

impl Store {
    /// The device, created on first sight; updates `last_seen`. Within `LAST_SEEN_PRECISION_SECS` of
    /// the previous sighting nothing is written: a write (and its fsync) per request would cost
    /// more than the inventory gains.
    pub async fn touch_device(&self, name: &str, now: UnixTime) -> Result<Device> {
        match self.device(name).await? {
            Some(d) => self.touch_seen_device(d, now).await,
            None => self.record_seen(name, now).await,
        }
    }

    /// `touch_device` for a device the caller read already: when it was seen within
    /// `LAST_SEEN_PRECISION_SECS`, nothing is written or read again.
    pub async fn touch_seen_device(&self, d: Device, now: UnixTime) -> Result<Device> {
        if (now.0 - d.last_seen.0).abs() < LAST_SEEN_PRECISION_SECS {
            return Ok(d);
        }
        self.record_seen(&d.name, now).await
    }

    async fn record_seen(&self, name: &str, now: UnixTime) -> Result<Device> {
        {
            let _writer = self.writer().await;
            sqlx::query(
                "INSERT INTO devices (name, blocked, created_at, last_seen) VALUES ($1, 0, $2, $2) \
                 ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .bind(name)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        }
        self.device(name).await?.ok_or(StoreError::Db(sqlx::Error::RowNotFound))
    }

    pub async fn device(&self, name: &str) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, blocked, created_at, last_seen, owner FROM devices WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Device::from))
    }

    /// A device and its groups (sorted) in one statement: what an enrollment reads about the
    /// device it is for.
    pub async fn device_with_groups(&self, name: &str) -> Result<Option<(Device, Vec<String>)>> {
        const SQL: &str = "SELECT d.id, d.name, d.blocked, d.created_at, d.last_seen, d.owner, g.group_name \
             FROM devices d LEFT JOIN device_groups g ON g.device_id = d.id WHERE d.name = $1 ORDER BY g.group_name";
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            device: DeviceRow,
            group_name: Option<String>,
        }
        let rows = match &self.sqlite {
            Some(sqlite) => sqlite.readers.all(SQL, &[&name], |r| {
                Ok(Row { device: DeviceRow::from_sqlite(r)?, group_name: r.get("group_name")? })
            })?,
            None => sqlx::query_as::<_, Row>(SQL).bind(name).fetch_all(&self.pool).await?,
        };
        let groups = rows.iter().filter_map(|r| r.group_name.clone()).collect();
        Ok(rows.into_iter().next().map(|r| (Device::from(r.device), groups)))
    }

    /// A device whose name is `name` up to ASCII case and trailing dots, spelled otherwise (a
    /// different row than an exact match). The condition is the expression of the index
    /// `devices_canonical_name` (migration 0014), which answers it without a scan.
    pub async fn device_spelled_otherwise(&self, name: &str) -> Result<Option<Device>> {
        let canonical = name.trim_end_matches('.').to_ascii_lowercase();
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, blocked, created_at, last_seen, owner FROM devices \
             WHERE lower(rtrim(name, '.')) = $1 AND name <> $2 ORDER BY id LIMIT 1",
        )
        .bind(&canonical)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Device::from))
    }

    pub async fn device_by_id(&self, id: i64) -> Result<Option<Device>> {
        let row = sqlx::query_as::<_, DeviceRow>(
            "SELECT id, name, blocked, created_at, last_seen, owner FROM devices WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Device::from))
    }

    /// Blocks or unblocks a device; false when there is no such device.
    pub async fn set_device_state(&self, name: &str, state: DeviceState) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE devices SET blocked = $2 WHERE name = $1")
            .bind(name)
            .bind(i64::from(state == DeviceState::Blocked))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Binds a device that is not bound yet to `owner`; false when it is bound already (to
    /// anyone) or unknown. One statement: of two racing first enrollments, one binds it.
    pub async fn bind_device(&self, device_id: i64, owner: &str) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE devices SET owner = $2 WHERE id = $1 AND owner IS NULL")
            .bind(device_id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// An administrator's rebinding: sets (or with None clears) the owner of a device by name.
    pub async fn set_device_owner(&self, name: &str, owner: Option<&str>) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE devices SET owner = $2 WHERE name = $1")
            .bind(name)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Puts a device in a group (templates may grant `device-group:NAME`); false when it was in.
    pub async fn add_device_to_group(&self, group: &str, device_id: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "INSERT INTO device_groups (group_name, device_id) VALUES ($1, $2) \
             ON CONFLICT (group_name, device_id) DO NOTHING",
        )
        .bind(group)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Takes a device out of a group; false when it was not in it.
    pub async fn remove_device_from_group(&self, group: &str, device_id: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("DELETE FROM device_groups WHERE group_name = $1 AND device_id = $2")
            .bind(group)
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The groups a device is in, by name.
    pub async fn device_groups(&self, device_id: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT group_name FROM device_groups WHERE device_id = $1 ORDER BY group_name")
                .bind(device_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(g,)| g).collect())
    }

    /// The devices in a group, by name.
    pub async fn device_group_members(&self, group: &str) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT d.name FROM device_groups g JOIN devices d ON d.id = g.device_id \
             WHERE g.group_name = $1 ORDER BY d.name",
        )
        .bind(group)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(n,)| n).collect())
    }

    /// Removes a device that holds no certificates and no requests (a retired device), with
    /// what it reported about itself.
    pub async fn delete_device(&self, name: &str) -> Result<bool> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM device_attributes WHERE device_id IN (SELECT id FROM devices WHERE name = $1)",
            "DELETE FROM device_groups WHERE device_id IN (SELECT id FROM devices WHERE name = $1)",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await?;
        }
        let r = sqlx::query(
            "DELETE FROM devices WHERE name = $1 \
             AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.device_id = devices.id) \
             AND NOT EXISTS (SELECT 1 FROM certificates WHERE certificates.device_id = devices.id)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            // Still in use (or unknown): its attributes stay too.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Devices by name with their current certificates and next renewal.
    pub async fn devices(&self, now: UnixTime, limit: i64) -> Result<Vec<DeviceSummary>> {
        self.devices_matching(now, &DeviceFilter { limit, ..Default::default() }).await
    }

    /// Devices matching the filter, by name; the filter runs in SQL, before the limit.
    pub async fn devices_matching(&self, now: UnixTime, f: &DeviceFilter) -> Result<Vec<DeviceSummary>> {
        // Case-insensitive on both backends; LIKE's own wildcards in the search match literally.
        let pattern = format!("%{}%", f.name_contains.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = sqlx::query_as::<_, SummaryRow>(
            "SELECT d.name, d.blocked, d.created_at, d.last_seen, \
             (SELECT COUNT(*) FROM certificates c WHERE c.device_id = d.id AND c.state = 'issued' AND c.not_after > $1) \
               AS certificates, \
             (SELECT MIN(c.renew_after) FROM certificates c WHERE c.device_id = d.id AND c.state = 'issued' AND c.not_after > $1) \
               AS next_renewal \
             FROM devices d WHERE lower(d.name) LIKE lower($3) ESCAPE '\\' AND ($4 < 0 OR d.blocked = $4) \
             ORDER BY d.name LIMIT $2",
        )
        .bind(now.0)
        .bind(f.limit)
        .bind(pattern)
        .bind(f.blocked.map_or(-1, i64::from))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeviceSummary {
                name: r.name,
                state: state(r.blocked),
                created_at: UnixTime(r.created_at),
                last_seen: UnixTime(r.last_seen),
                certificates: r.certificates,
                next_renewal: r.next_renewal.map(UnixTime),
            })
            .collect())
    }

    /// Replaces what a device reported about itself (e.g. MS-MDE2 AdditionalContext items).
    pub async fn set_device_attributes(&self, device_id: i64, items: &[(String, String)], now: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        for (name, value) in items {
            sqlx::query(
                "INSERT INTO device_attributes (device_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (device_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(device_id)
            .bind(name)
            .bind(value)
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn device_attributes(&self, device_id: i64) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as::<_, (String, String)>(
            "SELECT name, value FROM device_attributes WHERE device_id = $1 ORDER BY name",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
