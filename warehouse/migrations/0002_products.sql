-- The product dimension is fixed by the domain: seed it (no inline VALUES: 18.16 + clickhouse-driver hang).
INSERT INTO dim_product (product, name, category, is_fuel)
SELECT t.1, t.2, t.3, t.4 FROM (
    SELECT arrayJoin([
        ('92', 'Gasoline 92#', 'fuel', toUInt8(1)),
        ('95', 'Gasoline 95#', 'fuel', toUInt8(1)),
        ('98', 'Gasoline 98#', 'fuel', toUInt8(1)),
        ('diesel', 'Diesel 0#', 'fuel', toUInt8(1)),
        ('shop', 'Convenience shop', 'non_fuel', toUInt8(0)),
        ('wash', 'Car wash', 'non_fuel', toUInt8(0))
    ]) AS t
);
