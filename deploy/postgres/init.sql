-- One database per service: each service owns its store.
CREATE DATABASE leads;
CREATE DATABASE nurture;
CREATE DATABASE billing;
CREATE DATABASE retention;
