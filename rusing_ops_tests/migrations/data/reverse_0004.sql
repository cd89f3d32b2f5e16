-- undo 0004_drop_hourly_rate_rename_path_courses
ALTER TABLE `coaches` ADD `hourlyRateCents` int NOT NULL AFTER `languages`;
ALTER TABLE `learning_path_items` DROP FOREIGN KEY `learning_path_items_learningPathId_learning_paths_id_fk`;
ALTER TABLE `learning_path_items` DROP FOREIGN KEY `learning_path_items_courseId_courses_id_fk`;
ALTER TABLE `learning_path_items` DROP INDEX `learning_path_items_courseId_courses_id_fk`;
RENAME TABLE `learning_path_items` TO `learning_path_courses`;
ALTER TABLE `learning_path_courses` ADD CONSTRAINT `learning_path_courses_learningPathId_learning_paths_id_fk` FOREIGN KEY (`learningPathId`) REFERENCES `learning_paths`(`id`) ON DELETE cascade ON UPDATE no action;
ALTER TABLE `learning_path_courses` ADD CONSTRAINT `learning_path_courses_courseId_courses_id_fk` FOREIGN KEY (`courseId`) REFERENCES `courses`(`id`) ON DELETE cascade ON UPDATE no action;
CREATE TABLE `certificates` (
	`id` int AUTO_INCREMENT NOT NULL,
	`userId` int NOT NULL,
	`courseId` int NOT NULL,
	`certificateCode` varchar(64) NOT NULL,
	`language` enum('en','fr') NOT NULL,
	`pdfUrl` varchar(500),
	`issuedAt` timestamp NOT NULL DEFAULT (now()),
	CONSTRAINT `certificates_id` PRIMARY KEY(`id`),
	CONSTRAINT `certificates_certificateCode_unique` UNIQUE(`certificateCode`)
);
ALTER TABLE `certificates` ADD CONSTRAINT `certificates_userId_users_id_fk` FOREIGN KEY (`userId`) REFERENCES `users`(`id`) ON DELETE no action ON UPDATE no action;
ALTER TABLE `certificates` ADD CONSTRAINT `certificates_courseId_courses_id_fk` FOREIGN KEY (`courseId`) REFERENCES `courses`(`id`) ON DELETE no action ON UPDATE no action;
