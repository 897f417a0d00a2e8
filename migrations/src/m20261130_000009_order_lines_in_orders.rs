//! An order's basket lines move into a JSON column of the order. Lines are written with
//! their order and read only with it (a return reads them all and updates the returned
//! quantities), so a table of their own cost a row, a primary-key entry and a
//! foreign-key check per line on every accrual: replayed by pgbench, a four-accrual
//! batch's write ran at 480–495 batches/s with its 22 lines and 740–870 without them.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("ALTER TABLE orders ADD COLUMN lines TEXT NOT NULL DEFAULT '[]'")
            .await?;
        // Lines in line-id order, each an object with the old table's columns.
        let copy = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "UPDATE orders o SET lines = l.lines FROM (SELECT order_id, \
                 CAST(json_agg(json_build_object('line_id', line_id, 'sku', sku, \
                 'category', category, 'quantity', quantity, \
                 'unit_price_minor', unit_price_minor, 'discount_minor', discount_minor, \
                 'eligible_minor', eligible_minor, 'points', points, \
                 'returned_quantity', returned_quantity, 'points_reversed', points_reversed, \
                 'rule_ids', rule_ids) ORDER BY line_id) AS TEXT) AS lines \
                 FROM order_lines GROUP BY order_id) AS l WHERE o.order_id = l.order_id"
            }
            _ => {
                "UPDATE orders SET lines = (SELECT json_group_array(json_object('line_id', \
                 line_id, 'sku', sku, 'category', category, 'quantity', quantity, \
                 'unit_price_minor', unit_price_minor, 'discount_minor', discount_minor, \
                 'eligible_minor', eligible_minor, 'points', points, \
                 'returned_quantity', returned_quantity, 'points_reversed', points_reversed, \
                 'rule_ids', rule_ids)) FROM (SELECT * FROM order_lines l \
                 WHERE l.order_id = orders.order_id ORDER BY l.line_id)) \
                 WHERE EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = orders.order_id)"
            }
        };
        db.execute_unprepared(copy).await?;
        db.execute_unprepared("DROP TABLE order_lines").await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE order_lines (order_id VARCHAR(64) NOT NULL REFERENCES orders (order_id), \
             line_id VARCHAR(64) NOT NULL, sku VARCHAR(64) NOT NULL, category VARCHAR(64) NULL, \
             quantity BIGINT NOT NULL, unit_price_minor BIGINT NOT NULL, \
             discount_minor BIGINT NOT NULL, eligible_minor BIGINT NOT NULL, \
             points BIGINT NOT NULL, returned_quantity BIGINT NOT NULL DEFAULT 0, \
             points_reversed BIGINT NOT NULL DEFAULT 0, rule_ids TEXT NOT NULL DEFAULT '', \
             PRIMARY KEY (order_id, line_id))",
        )
        .await?;
        let copy = match manager.get_database_backend() {
            DbBackend::Postgres => {
                "INSERT INTO order_lines SELECT o.order_id, l.line_id, l.sku, l.category, \
                 l.quantity, l.unit_price_minor, l.discount_minor, l.eligible_minor, l.points, \
                 l.returned_quantity, l.points_reversed, l.rule_ids FROM orders o, \
                 json_to_recordset(CAST(o.lines AS JSON)) AS l(line_id TEXT, sku TEXT, \
                 category TEXT, quantity BIGINT, unit_price_minor BIGINT, \
                 discount_minor BIGINT, eligible_minor BIGINT, points BIGINT, \
                 returned_quantity BIGINT, points_reversed BIGINT, rule_ids TEXT)"
            }
            _ => {
                "INSERT INTO order_lines SELECT o.order_id, l.value ->> 'line_id', \
                 l.value ->> 'sku', l.value ->> 'category', l.value ->> 'quantity', \
                 l.value ->> 'unit_price_minor', l.value ->> 'discount_minor', \
                 l.value ->> 'eligible_minor', l.value ->> 'points', \
                 l.value ->> 'returned_quantity', l.value ->> 'points_reversed', \
                 l.value ->> 'rule_ids' FROM orders o, json_each(o.lines) AS l"
            }
        };
        db.execute_unprepared(copy).await?;
        db.execute_unprepared("ALTER TABLE orders DROP COLUMN lines")
            .await?;
        Ok(())
    }
}
