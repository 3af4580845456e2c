//! The Slack listener: the Events API (`listen = "events"`, signed HTTP requests on
//! `POST /slack/events`) or Socket Mode (`listen = "socket"`, websockets Threadline opens).

mod event;
mod verify;
