-- A demo campus for scripts/demo.sh, on the CampsHub360 tables `rollcall-ingest migrate`
-- creates in standalone mode (no foreign keys there; every NOT NULL column is given, as Django
-- gives them). It matches rollcalld's --simulate mode: device "demo-gateway" in room DEMO-101,
-- students DEMO001..DEMO040 (the roll numbers its demo roster maps cards and fingers to), all
-- enrolled in one course section, and a class in that room that opened a minute ago and runs for
-- twelve hours (stored as UTC wall clock: the demo's ingest runs with campus timezone UTC).
-- Punches in the first five minutes are `present`, later first punches `late`.
BEGIN;

INSERT INTO students_academicyear (year, start_date, end_date, is_current, is_active)
VALUES ('2025-2026', '2025-06-01', '2026-05-31', true, true);

INSERT INTO students_studentbatch (semester, year_of_study, section, batch_name, batch_code,
    max_capacity, current_count, is_active, created_at, updated_at, academic_year_id, department_id)
SELECT '5', '3', 'A', 'Demo batch 3A', 'DEMO-3A', 60, 40, true, now(), now(), id,
    '00000000-0000-0000-0000-00000000d3d0'
FROM students_academicyear WHERE year = '2025-2026';

INSERT INTO students_student (id, created_at, updated_at, roll_number, first_name, last_name,
    date_of_birth, gender, country, enrollment_date, status, student_batch_id)
SELECT gen_random_uuid(), now(), now(), format('DEMO%s', lpad(i::text, 3, '0')),
    'Student', format('Number %s', i), '2005-01-01', 'O', 'India', '2023-07-01', 'ACTIVE', b.id
FROM generate_series(1, 40) AS i, students_studentbatch b WHERE b.batch_code = 'DEMO-3A';

INSERT INTO academics_coursesection (section_type, max_students, current_enrollment, is_active,
    notes, created_at, updated_at, course_id, faculty_id, student_batch_id)
SELECT 'LECTURE', 60, 40, true, 'demo', now(), now(), 1,
    '00000000-0000-0000-0000-0000000fac01', id
FROM students_studentbatch WHERE batch_code = 'DEMO-3A';

INSERT INTO academics_courseenrollment (enrollment_date, status, grade, enrollment_type, notes,
    created_at, updated_at, student_id, course_section_id)
SELECT current_date, 'ENROLLED', '', 'REGULAR', '', now(), now(), s.id, cs.id
FROM students_student s, academics_coursesection cs
WHERE s.roll_number LIKE 'DEMO%' AND cs.notes = 'demo';

INSERT INTO attendance_biometric_device (created_at, updated_at, device_id, device_name,
    device_type, location, room, status, firmware_version, is_enabled, auto_sync,
    sync_interval_minutes, ip_address, port, api_endpoint, api_key)
VALUES (now(), now(), 'demo-gateway', 'Demo gateway (rollcalld --simulate)', 'fingerprint',
    'Demo block, ground floor', 'DEMO-101', 'active', '', true, false, 5, '127.0.0.1', 0, '', '');

INSERT INTO attendance_session (created_at, updated_at, scheduled_date, start_datetime,
    end_datetime, room, status, auto_opened, auto_closed, makeup, notes, qr_token,
    course_section_id, faculty_id, biometric_device_id, biometric_enabled, offline_sync_token)
SELECT now(), now(), current_date, date_trunc('second', now()) - interval '1 minute',
    date_trunc('second', now()) + interval '12 hours', 'DEMO-101', 'open', false, false, false,
    'demo class', '', id, faculty_id, 'demo-gateway', true, ''
FROM academics_coursesection WHERE notes = 'demo';

COMMIT;
