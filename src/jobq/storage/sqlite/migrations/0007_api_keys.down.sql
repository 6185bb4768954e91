DROP TABLE jobq_api_keys;
